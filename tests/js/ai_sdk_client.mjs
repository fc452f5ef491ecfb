// Runs one AI SDK text-stream client against the proxy and prints what a frontend would see.
//
//   node ai_sdk_client.mjs '{"client": "completion" | "chat", "url": "...", "prompt": "...",
//                            "headers": {...}}'
//
// "completion" is `callCompletionApi`, what React's `useCompletion({streamProtocol: 'text'})`
// runs; "chat" is `AbstractChat` with `TextStreamChatTransport`, what `useChat` runs (its React
// `Chat` class is AbstractChat plus a React state holder like the one below).
// Prints one JSON line: {updates: [text, ...], text, status, error, finished}.
import { AbstractChat, TextStreamChatTransport, callCompletionApi } from "ai";

const options = JSON.parse(process.argv[2]);

async function runCompletion() {
  const seen = { updates: [], text: null, error: null, finished: false };
  const result = await callCompletionApi({
    api: options.url,
    prompt: options.prompt,
    credentials: undefined,
    headers: options.headers,
    body: {},
    streamProtocol: "text",
    setCompletion: (completion) => {
      if (completion) seen.updates.push(completion);
    },
    setLoading: () => {},
    setError: (error) => {
      if (error) seen.error = String(error.message ?? error);
    },
    setAbortController: () => {},
    onFinish: (_prompt, completion) => {
      seen.finished = true;
      seen.text = completion;
    },
    onError: () => {},
    fetch: undefined,
  });
  return { ...seen, status: seen.error ? "error" : "ready", returned: result ?? null };
}

class PlainChatState {
  // What @ai-sdk/react's ReactChatState does, without React.
  constructor() {
    this.status = "ready";
    this.error = undefined;
    this.messages = [];
  }
  pushMessage(message) {
    this.messages = this.messages.concat(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [
      ...this.messages.slice(0, index),
      this.snapshot(message),
      ...this.messages.slice(index + 1),
    ];
  }
  snapshot(value) {
    return structuredClone(value);
  }
}

class PlainChat extends AbstractChat {}

function textOf(message) {
  return message.parts
    .filter((part) => part.type === "text")
    .map((part) => part.text)
    .join("");
}

async function runChat() {
  const seen = { updates: [], finished: false, finish: null };
  const state = new PlainChatState();
  const replace = state.replaceMessage.bind(state);
  state.replaceMessage = (index, message) => {
    replace(index, message);
    const text = textOf(message);
    if (message.role === "assistant" && text && text !== seen.updates.at(-1)) {
      seen.updates.push(text);
    }
  };
  const chat = new PlainChat({
    state,
    transport: new TextStreamChatTransport({ api: options.url, headers: options.headers }),
    onFinish: ({ isAbort, isDisconnect, isError }) => {
      seen.finish = { isAbort, isDisconnect, isError };
      seen.finished = !isAbort && !isDisconnect && !isError;
    },
  });
  await chat.sendMessage({ text: options.prompt });
  const last = chat.messages.at(-1);
  return {
    updates: seen.updates,
    text: last && last.role === "assistant" ? textOf(last) : null,
    status: chat.status,
    error: chat.error ? String(chat.error.message ?? chat.error) : null,
    finished: seen.finished,
    finish: seen.finish,
  };
}

const run = options.client === "completion" ? runCompletion : runChat;
process.stdout.write(`${JSON.stringify(await run())}\n`);
