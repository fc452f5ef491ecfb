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

// A streamed answer's Markdown in one element. Parsing the whole text on every frame costs
// tens of milliseconds once an answer is long, so while it streams the blocks before the last
// two are settled: rendered once and kept. Only the last two are parsed again: the growing
// block, and the one before it, which the next line can still change (a loose list's next
// item, a setext heading's underline). The final render parses the whole text once, so the
// answer ends exactly as one parse shows it (reference-style links resolved too).
class MarkdownView {
  constructor(element) {
    this.element = element;
    this.settled = 0; // characters of the normalised source rendered for good
    this.tail = []; // the nodes of the blocks still growing
  }

  render(text) {
    // marked reads CR and CRLF as LF; its tokens' raw text is of the normalised source.
    const source = text.replace(/\r\n?/g, "\n");
    let tail = source.slice(this.settled);
    const tokens = markdown.lexer(tail);
    const blocks = tokens.flatMap((token, index) => (token.type === "space" ? [] : [index]));
    const keep = blocks.length >= 3 ? blocks[blocks.length - 2] : 0;
    const lengths = tokens.map((token) => token.raw.length);
    const sum = (numbers) => numbers.reduce((total, length) => total + length, 0);
    if (keep > 0 && sum(lengths) === tail.length) {
      const settling = sum(lengths.slice(0, keep));
      this.element.insertBefore(renderMarkdown(tail.slice(0, settling)), this.tail[0] || null);
      this.settled += settling;
      tail = tail.slice(settling);
    }
    this.replaceTail(renderMarkdown(tail));
  }

  finish(text) {
    this.element.replaceChildren();
    this.settled = 0;
    this.tail = [];
    this.replaceTail(renderMarkdown(text));
  }

  replaceTail(fragment) {
    for (const node of this.tail) node.remove();
    this.tail = [...fragment.childNodes];
    this.element.append(fragment);
  }
}
