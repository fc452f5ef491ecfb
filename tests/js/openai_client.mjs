// Runs OpenAI's own SDK (npm `openai`) against the proxy's /v1/chat/completions and prints
// what an application using it would see.
//
//   node openai_client.mjs '{"url": "http://.../v1", "key": "...", "model": "...", "prompt": "..."}'
//
// A streamed completion, read as the SDK's README does (`for await` over the chunks).
// Prints one JSON line: {deltas: [text, ...], text, finishReason, error, errorType}.
import OpenAI from "openai";

const options = JSON.parse(process.argv[2]);
const client = new OpenAI({ baseURL: options.url, apiKey: options.key, maxRetries: 0 });
const seen = { deltas: [], finishReason: null, error: null, errorType: null };
try {
  const stream = await client.chat.completions.create({
    model: options.model,
    messages: [{ role: "user", content: options.prompt }],
    stream: true,
  });
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice?.delta?.content) seen.deltas.push(choice.delta.content);
    if (choice?.finish_reason) seen.finishReason = choice.finish_reason;
  }
} catch (error) {
  seen.error = String(error.message ?? error);
  seen.errorType = error.constructor.name;
}
process.stdout.write(`${JSON.stringify({ ...seen, text: seen.deltas.join("") })}\n`);
