// Runs one AI SDK text-stream client against the proxy and prints what a frontend would see.
//
//   node ai_sdk_client.mjs '{"sdk": "ai5" | "ai7", "client": "completion" | "chat", "url": "...",
//                            "prompt": "...", "headers": {...}}'
//
// "completion" is `callCompletionApi`, what React's `useCompletion({streamProtocol: 'text'})`
// runs; "chat" is `AbstractChat` with `TextStreamChatTransport`, what `useChat` runs (its React
// `Chat` class is AbstractChat plus a React state holder like PlainChatState). Both have the
// same names and shape in ai 5 and 7; 7's `callCompletionApi` also takes `getAbortController`,
// which its `useCompletion` passes so that a superseded request stops updating the completion.
// Prints one JSON line: {updates: [text, ...], text, status, error, finished}.
import { PlainChatState, textOf } from "./plain_chat.mjs";

const options = JSON.parse(process.argv[2]);
const { AbstractChat, TextStreamChatTransport, callCompletionApi } = await import(options.sdk);

async function runCompletion() {
  const seen = { updates: [], text: null, error: null, finished: false };
  let abortController = null;
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
    setAbortController: (controller) => {
      abortController = controller;
    },
    getAbortController: () => abortController,
    onFinish: (_prompt, completion) => {
      seen.finished = true;
      seen.text = completion;
    },
    onError: () => {},
    fetch: undefined,
  });
  return { ...seen, status: seen.error ? "error" : "ready", returned: result ?? null };
}

class PlainChat extends AbstractChat {}

async function runChat() {
  const seen = { updates: [], finished: false, finish: null };
  const state = new PlainChatState();
  state.onReplace = (message) => {
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
