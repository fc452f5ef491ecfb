// The chat page: streams POST /v1/stream as SSE with fetch and shows every part as it arrives:
// the model's thoughts in a collapsed block, its answer as Markdown. Model output is untrusted:
// thoughts and the user's own messages only ever become Text nodes, and the answer's Markdown
// becomes DOM only through MarkdownView (markdown.js), which escapes and sanitises it.
"use strict";

const KEY_STORAGE = "llm-stream-proxy.api-key";

const view = {
  conversation: document.getElementById("conversation"),
  empty: document.getElementById("empty"),
  composer: document.getElementById("composer"),
  prompt: document.getElementById("prompt"),
  send: document.getElementById("send"),
  stop: document.getElementById("stop"),
  model: document.getElementById("model"),
  apiKey: document.getElementById("api-key"),
  status: document.getElementById("status"),
};

// The conversation as the API takes it: only turns that got an answer (even a partial one).
const history = [];
let running = null; // the AbortController of the answer being streamed

function authHeaders() {
  const key = view.apiKey.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function setStatus(text) {
  view.status.textContent = text;
}

async function errorMessage(response) {
  // Before the commit point the proxy answers {"error": {"type", "message", "request_id"}}.
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === "string") {
      return body.error.message;
    }
  } catch {
    // not JSON: fall back to the status line
  }
  return response.statusText || "request failed";
}

async function loadModels() {
  let response;
  try {
    response = await fetch("v1/models", { headers: authHeaders() });
  } catch {
    setStatus("The proxy is not reachable.");
    return;
  }
  if (!response.ok) {
    const message = await errorMessage(response);
    setStatus(response.status === 401 ? `Enter an API key: ${message}` : message);
    return;
  }
  const { data } = await response.json();
  const chosen = view.model.value;
  view.model.replaceChildren(
    ...data.map((model) => new Option(`${model.id} (${model.dialect})`, model.id)),
  );
  if (data.some((model) => model.id === chosen)) view.model.value = chosen;
  setStatus("");
}

function addMessage(role, text) {
  view.empty.hidden = true;
  const article = document.createElement("article");
  article.className = `message ${role}`;
  const heading = document.createElement("h2");
  heading.className = "role";
  heading.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  article.append(heading, body);
  view.conversation.append(article);
  article.scrollIntoView({ block: "end" });
  return { article, body };
}

function seconds(milliseconds) {
  return milliseconds < 1000
    ? `${Math.round(milliseconds)} ms`
    : `${(milliseconds / 1000).toFixed(2)} s`;
}

// The model's reasoning, above its answer: collapsed, as plain text, timed.
class Thinking {
  constructor(answer) {
    this.details = document.createElement("details");
    this.details.className = "thinking";
    this.summary = document.createElement("summary");
    this.summary.textContent = "Thinking…";
    const thoughts = document.createElement("div");
    thoughts.className = "thoughts";
    this.textNode = document.createTextNode("");
    thoughts.append(this.textNode);
    this.details.append(this.summary, thoughts);
    answer.article.insertBefore(this.details, answer.body);
    this.startedAt = performance.now();
    this.endedAt = null;
  }

  append(text) {
    this.textNode.appendData(text);
  }

  end() {
    if (this.endedAt !== null) return;
    this.endedAt = performance.now();
    this.summary.textContent = `Thought for ${seconds(this.endedAt - this.startedAt)}`;
  }
}

class Answer {
  constructor() {
    const { article, body } = addMessage("assistant", "");
    this.article = article;
    this.body = body;
    this.text = ""; // the model's Markdown as it came: what the history sends back
    this.thinking = null;
    this.meta = document.createElement("p");
    this.meta.className = "meta";
    article.append(this.meta);
    this.startedAt = performance.now();
    this.firstAt = null; // the first part of any kind: a thinking model's first token
    this.firstTextAt = null;
    this.lastAt = null;
    this.frame = null; // the animation frame that will render the text
    this.markdown = new MarkdownView(body);
    this.setState("waiting", "Waiting for the first token…");
  }

  setState(state, label) {
    this.article.dataset.state = state;
    this.article.setAttribute("aria-busy", String(state === "waiting" || state === "streaming"));
    this.label = label;
    this.renderMeta();
  }

  progress() {
    const now = performance.now();
    if (this.firstAt === null) {
      this.firstAt = now;
      this.setState("streaming", "Streaming…");
    }
    this.lastAt = now;
    return now;
  }

  appendReasoning(text) {
    this.progress();
    if (this.thinking === null) this.thinking = new Thinking(this);
    this.thinking.append(text);
    this.scheduleRender();
  }

  appendText(text) {
    const now = this.progress();
    if (this.firstTextAt === null) this.firstTextAt = now;
    if (this.thinking !== null) this.thinking.end();
    this.text += text;
    this.scheduleRender();
  }

  // Rendered at most once a frame, however many deltas came: each render parses the last two
  // blocks again (MarkdownView).
  scheduleRender() {
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.render());
  }

  render() {
    this.frame = null;
    this.markdown.render(this.text);
    this.renderMeta();
    this.article.scrollIntoView({ block: "end" });
  }

  finish(state, label) {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
    this.markdown.finish(this.text);
    this.article.scrollIntoView({ block: "end" });
    if (this.thinking !== null) this.thinking.end();
    // The exact characters as received, beside their rendering (which drops Markdown syntax
    // and some line ends).
    this.article.dataset.markdown = this.text;
    this.setState(state, label);
  }

  renderMeta() {
    const parts = [this.label];
    if (this.firstAt !== null) {
      parts.push(`first token ${seconds(this.firstAt - this.startedAt)}`);
      const characters = [...this.text].length;
      const elapsed = this.firstTextAt === null ? 0 : (this.lastAt - this.firstTextAt) / 1000;
      if (elapsed > 0) parts.push(`${Math.round(characters / elapsed)} chars/s`);
      parts.push(`${characters} chars`);
    }
    this.meta.textContent = parts.filter(Boolean).join(" · ");
  }
}

// One SSE event of /v1/stream into the answer; the ending ({done} or {error}) when it is one.
function takeEvent(event, answer) {
  switch (event.type) {
    case "reasoning":
      answer.appendReasoning(JSON.parse(event.data).text);
      return null;
    case "delta":
      answer.appendText(JSON.parse(event.data).text);
      return null;
    case "done":
      return { done: JSON.parse(event.data) };
    case "error":
      return { error: JSON.parse(event.data).error };
    default:
      return null; // an event this page does not know yet
  }
}

// Streams the SSE representation of /v1/stream (raw text carries no thoughts): the answer's
// parts as they come, and how the stream ended (ending null: it closed without saying).
async function stream(messages, answer, signal) {
  const model = view.model.value;
  const response = await fetch("v1/stream", {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "text/event-stream",
      ...authHeaders(),
    },
    body: JSON.stringify(model ? { messages, model } : { messages }),
    signal,
  });
  if (!response.ok) {
    return { ok: false, status: response.status, message: await errorMessage(response) };
  }
  // One streaming decoder for the whole body: a read may end inside a multi-byte character.
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SSEParser();
  let ending = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    for (const event of parser.feed(value)) {
      if (ending === null) ending = takeEvent(event, answer);
    }
  }
  return { ok: true, ending };
}

function ended(answer, ending) {
  if (ending === null) {
    answer.finish("interrupted", "Interrupted: the stream ended before the answer did");
  } else if (ending.error) {
    const message = ending.error.message || "the stream failed";
    // After the commit point a failure comes as an `error` event: the text so far is partial.
    if (answer.firstAt !== null) answer.finish("interrupted", `Interrupted: ${message}`);
    else answer.finish("error", `Error: ${message}`);
  } else if (!answer.text) {
    answer.finish("done", "The model answered with no text");
  } else if (ending.done.finish_reason === "length") {
    answer.finish("done", "Cut short: the answer reached its length limit");
  } else {
    answer.finish("done", "");
  }
}

async function send() {
  const prompt = view.prompt.value;
  if (running || !prompt.trim()) return;
  view.prompt.value = "";
  addMessage("user", prompt);
  const messages = [...history, { role: "user", content: prompt }];
  const answer = new Answer();
  running = new AbortController();
  view.send.disabled = true;
  view.stop.disabled = false;
  setStatus("");
  try {
    const result = await stream(messages, answer, running.signal);
    if (result.ok) {
      ended(answer, result.ending);
    } else {
      answer.finish("error", `Error ${result.status}: ${result.message}`);
    }
  } catch (error) {
    if (error.name === "AbortError") {
      answer.finish("stopped", "Stopped");
    } else if (answer.firstAt !== null) {
      // A connection that breaks after the commit point.
      answer.finish("interrupted", "Interrupted: the stream broke before the answer ended");
    } else {
      answer.finish("error", `Error: the proxy is not reachable (${error.message})`);
    }
  } finally {
    running = null;
    view.send.disabled = false;
    view.stop.disabled = true;
  }
  if (answer.text) {
    history.push({ role: "user", content: prompt }, { role: "assistant", content: answer.text });
  } else if (!view.prompt.value) {
    view.prompt.value = prompt; // nothing came back: let the user retry or edit
  }
  view.prompt.focus();
}

function stop() {
  if (running) running.abort();
}

view.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
view.prompt.addEventListener("keydown", (event) => {
  // Enter also confirms an input method's candidate (Chinese, Japanese, ...): that must not
  // send. Some browsers report it only as keyCode 229.
  const composing = event.isComposing || event.keyCode === 229;
  if (event.key === "Enter" && !event.shiftKey && !composing) {
    event.preventDefault();
    send();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") stop();
});
view.stop.addEventListener("click", stop);
view.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
view.apiKey.addEventListener("change", () => {
  const key = view.apiKey.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  loadModels();
});
loadModels();
