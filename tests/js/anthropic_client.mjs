// Runs Anthropic's own SDK (npm `@anthropic-ai/sdk`) against the proxy's /v1/messages and prints
// what an application using it would see.
//
//   node anthropic_client.mjs '{"url": "http://...", "key": "...", "model": "...", "prompt": "..."}'
//
// A streamed message through the SDK's `messages.stream()` helper, which accumulates the events
// strictly (a delta for a block it has not seen fails it), thinking asked for.
// Prints one JSON line: {deltas: [text, ...], text, thinking, final, error, errorType}.
import Anthropic from "@anthropic-ai/sdk";

const options = JSON.parse(process.argv[2]);
const client = new Anthropic({ baseURL: options.url, apiKey: options.key, maxRetries: 0 });
const seen = { deltas: [], thinking: "", final: null, error: null, errorType: null };
try {
  const stream = client.messages.stream({
    model: options.model,
    max_tokens: 4000,
    thinking: { type: "enabled", budget_tokens: 1024 },
    messages: [{ role: "user", content: options.prompt }],
  });
  stream.on("text", (delta) => seen.deltas.push(delta));
  stream.on("thinking", (delta) => {
    seen.thinking += delta;
  });
  seen.final = await stream.finalMessage();
} catch (error) {
  seen.error = String(error.message ?? error);
  seen.errorType = error.constructor.name;
}
process.stdout.write(`${JSON.stringify({ ...seen, text: seen.deltas.join("") })}\n`);
