// Runs the AI SDK's default chat client against POST /v1/chat and prints what a frontend sees.
//
//   node chat_client.mjs '{"sdk": "ai5" | "ai7", "api": "http://.../v1/chat", "chatId": "...",
//                          "prompt": "...", "headers": {...}, "body": {...}, "dropAfter": N}'
//
// `AbstractChat` with `DefaultChatTransport` is what `useChat` runs (its React `Chat` class is
// AbstractChat plus a React state holder like PlainChatState). Without `dropAfter` it
// sends the prompt and waits for the end. With it, the client stops reading once the answer
// has N characters (the page is closed), then a new chat with the same id and the messages
// the app had stored (the user's) calls `resumeStream()`, as `useChat({resume: true})` does
// when the page is opened again. `body` is sent with the message as an app adds its own fields
// (e.g. {"reasoning": "low"}: `sendMessage(message, { body })`).
// Prints one JSON line: {text, reasoning, partTypes, status, error, finished, messageId, metadata,
// dropped}: `reasoning` is the text of the answer's reasoning parts (a thinking model's thoughts),
// `partTypes` the types of its parts in order (e.g. ["step-start", "reasoning", "text"]).

import { PlainChatState, textOf } from "./plain_chat.mjs";

const options = JSON.parse(process.argv[2]);
const { AbstractChat, DefaultChatTransport } = await import(options.sdk);

class PlainChat extends AbstractChat {}

function newChat(messages, seen) {
  const state = new PlainChatState(messages);
  const chat = new PlainChat({
    id: options.chatId,
    state,
    transport: new DefaultChatTransport({ api: options.api, headers: options.headers }),
    onFinish: ({ isAbort, isDisconnect, isError }) => {
      seen.finished = !isAbort && !isDisconnect && !isError;
    },
  });
  return { chat, state };
}

function report(chat, seen) {
  const last = chat.messages.at(-1);
  const answer = last && last.role === "assistant" ? last : null;
  return {
    text: answer ? textOf(answer) : null,
    reasoning: answer ? textOf(answer, "reasoning") : null,
    partTypes: answer ? answer.parts.map((part) => part.type) : null,
    status: chat.status,
    error: chat.error ? String(chat.error.message ?? chat.error) : null,
    finished: seen.finished,
    messageId: answer ? answer.id : null,
    metadata: answer?.metadata ?? null,
  };
}

async function send() {
  const seen = { finished: false };
  const { chat } = newChat([], seen);
  await chat.sendMessage({ text: options.prompt }, { body: options.body });
  return report(chat, seen);
}

async function dropAndResume() {
  const first = { finished: false };
  const { chat, state } = newChat([], first);
  let dropped = null;
  state.onReplace = (message) => {
    if (dropped === null && message.role === "assistant") {
      const text = textOf(message);
      if ([...text].length >= options.dropAfter) {
        dropped = { text, messageId: message.id };
        chat.stop();
      }
    }
  };
  await chat.sendMessage({ text: options.prompt }, { body: options.body });
  const stored = chat.messages.filter((message) => message.role === "user");
  const second = { finished: false };
  const reopened = newChat(stored, second).chat;
  await reopened.resumeStream();
  return { ...report(reopened, second), dropped };
}

const run = options.dropAfter === undefined ? send : dropAndResume;
process.stdout.write(`${JSON.stringify(await run())}\n`);
