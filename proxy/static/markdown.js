// A model's Markdown as safe DOM: marked (vendor/marked) parses it, DOMPurify (vendor/dompurify)
// cleans what marked made. Model output is untrusted: HTML it writes is escaped and shown as
// text, and whatever reached the HTML anyway is sanitised before it becomes nodes.
"use strict";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHTML(text) {
  return text.replace(/[&<>"']/g, (character) => ESCAPES[character]);
}

const markdown = new marked.Marked({
  gfm: true, // tables, strikethrough, task lists, bare URLs as links
  renderer: {
    // Raw HTML in the model's text (`<script>`, `<img onerror>`) is shown, not run.
    html({ text, block }) {
      return block ? `<p>${escapeHTML(text)}</p>` : escapeHTML(text);
    },
    // An image is a request the model chooses: a URL that carries data away (a known prompt
    // injection exfiltration) or one the CSP refuses. It becomes a link the user may follow.
    image({ href, text }) {
      return `<a href="${escapeHTML(href)}">${escapeHTML(text || href)}</a>`;
    },
  },
});

const SANITIZE = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "button", "textarea", "select"],
  FORBID_ATTR: ["style"], // the CSP refuses inline styles anyway: no console error per render
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

// Markdown source -> a sanitised DocumentFragment. marked's newline after the last block is
// dropped, so one paragraph without Markdown syntax reads back (textContent) as it came.
function renderMarkdown(source) {
  return DOMPurify.sanitize(markdown.parse(source).trimEnd(), SANITIZE);
}
