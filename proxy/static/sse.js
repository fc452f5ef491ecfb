// Server-sent events as the WHATWG HTML standard parses them ("9.2.6 Interpreting an event
// stream"), for a fetch body: EventSource cannot POST. Feed it decoded text in pieces split
// anywhere; it hands back each complete event once.
"use strict";

class SSEParser {
  constructor() {
    this.buffer = "";
    this.afterCR = false; // the last piece ended in CR: a LF starting the next one ends no line
    this.type = "";
    this.data = [];
    this.lastEventId = "";
  }

  // The events completed by this piece of text, as {type, data, id}.
  feed(text) {
    const events = [];
    if (this.afterCR && text.startsWith("\n")) text = text.slice(1);
    this.afterCR = false;
    this.buffer += text;
    let start = 0;
    // Each search runs again only once passed: a piece with no CR is scanned for one once.
    let cr = -2;
    let lf = -2;
    for (;;) {
      if (cr !== -1 && cr < start) cr = this.buffer.indexOf("\r", start);
      if (lf !== -1 && lf < start) lf = this.buffer.indexOf("\n", start);
      const end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
      if (end === -1) break;
      let next = end + 1;
      if (this.buffer[end] === "\r") {
        if (next === this.buffer.length) this.afterCR = true;
        else if (this.buffer[next] === "\n") next += 1;
      }
      const event = this.line(this.buffer.slice(start, end));
      if (event) events.push(event);
      start = next;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return null; // a comment: the proxy's `: ping` keep-alives
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    // `retry` and unknown fields: nothing a fetch reader uses
    return null;
  }

  dispatch() {
    const { type, data } = this;
    this.type = "";
    this.data = [];
    if (data.length === 0) return null;
    return { type: type || "message", data: data.join("\n"), id: this.lastEventId };
  }
}
