// The chat page: streams POST /v1/stream with fetch and renders every chunk as it arrives.
// Model output is untrusted: it only ever becomes Text nodes, never markup.
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
  const textNode = document.createTextNode(text);
  body.append(textNode);
  article.append(heading, body);
  view.conversation.append(article);
  article.scrollIntoView({ block: "end" });
  return { article, body, textNode };
}

function seconds(milliseconds) {
  return milliseconds < 1000
    ? `${Math.round(milliseconds)} ms`
    : `${(milliseconds / 1000).toFixed(2)} s`;
}

class Answer {
  constructor() {
    const { article, body, textNode } = addMessage("assistant", "");
    this.article = article;
    this.body = body;
    this.textNode = textNode;
    this.meta = document.createElement("p");
    this.meta.className = "meta";
    article.append(this.meta);
    this.startedAt = performance.now();
    this.firstAt = null;
    this.lastAt = null;
    this.setState("waiting", "Waiting for the first token…");
  }

  get text() {
    return this.textNode.data;
  }

  setState(state, label) {
    this.article.dataset.state = state;
    this.article.setAttribute("aria-busy", String(state === "waiting" || state === "streaming"));
    this.label = label;
    this.renderMeta();
  }

  append(chunk) {
    const now = performance.now();
    if (this.firstAt === null) {
      this.firstAt = now;
      this.setState("streaming", "Streaming…");
    }
    this.lastAt = now;
    this.textNode.appendData(chunk);
    this.renderMeta();
    this.article.scrollIntoView({ block: "end" });
  }

  renderMeta() {
    const parts = [this.label];
    if (this.firstAt !== null) {
      parts.push(`first token ${seconds(this.firstAt - this.startedAt)}`);
      const characters = [...this.text].length;
      const elapsed = (this.lastAt - this.firstAt) / 1000;
      if (elapsed > 0) parts.push(`${Math.round(characters / elapsed)} chars/s`);
      parts.push(`${characters} chars`);
    }
    this.meta.textContent = parts.filter(Boolean).join(" · ");
  }
}

async function stream(messages, answer, signal) {
  const model = view.model.value;
  const response = await fetch("v1/stream", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(model ? { messages, model } : { messages }),
    signal,
  });
  if (!response.ok) {
    return { ok: false, status: response.status, message: await errorMessage(response) };
  }
  const reader = response.body.getReader();
  // One decoder for the whole body: a chunk may end inside a multi-byte character.
  const decoder = new TextDecoder("utf-8");
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    const text = decoder.decode(value, { stream: true });
    if (text) answer.append(text);
  }
  const rest = decoder.decode();
  if (rest) answer.append(rest);
  return { ok: true };
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
      answer.setState("done", answer.text ? "" : "The model answered with no text");
    } else {
      answer.setState("error", `Error ${result.status}: ${result.message}`);
    }
  } catch (error) {
    if (error.name === "AbortError") {
      answer.setState("stopped", "Stopped");
    } else if (answer.firstAt !== null) {
      // After the commit point the proxy reports a failure by breaking the connection.
      answer.setState("interrupted", "Interrupted: the stream broke before the answer ended");
    } else {
      answer.setState("error", `Error: the proxy is not reachable (${error.message})`);
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
