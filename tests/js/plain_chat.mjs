// What both chat clients share: a chat state without React, and the text of a message.

export class PlainChatState {
  // What @ai-sdk/react's ReactChatState does, without React; onReplace sees every update.
  constructor(messages = []) {
    this.status = "ready";
    this.error = undefined;
    this.messages = messages;
    this.onReplace = undefined;
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
    this.onReplace?.(message);
  }
  snapshot(value) {
    return structuredClone(value);
  }
}

// The text of a message's parts of one type: "text" (the answer) or "reasoning" (its thoughts).
export function textOf(message, type = "text") {
  return message.parts
    .filter((part) => part.type === type)
    .map((part) => part.text)
    .join("");
}
