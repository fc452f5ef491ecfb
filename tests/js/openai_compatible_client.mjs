// Runs the AI SDK's OpenAI-compatible provider (npm `@ai-sdk/openai-compatible`, with `ai` 7)
// against the proxy's /v1/chat/completions, as an app built on the AI SDK calls a gateway.
//
//   node openai_compatible_client.mjs '{"baseURL": "http://.../v1", "apiKey": "...",
//                                       "model": "...", "prompt": "...",
//                                       "reasoningEffort": "low", "generate": false}'
//
// `streamText` read through `fullStream` (or `generateText` with `"generate": true`);
// `reasoningEffort`, when given, is the provider option an app sets to ask for thinking.
// Prints one JSON line: {reasoning, text, types, finishReason, errors, reasoningTokens}:
// `reasoning` and `text` the concatenated reasoning and text deltas (or the generated parts),
// `types` the stream's part types in order with repeats of one type folded into one.
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, streamText } from "ai7";

const options = JSON.parse(process.argv[2]);
const provider = createOpenAICompatible({
  name: "proxy",
  baseURL: options.baseURL,
  apiKey: options.apiKey,
  includeUsage: true, // stream_options.include_usage: the usage chunk, with its reasoning tokens
});
const request = {
  model: provider(options.model),
  prompt: options.prompt,
  maxRetries: 0,
  providerOptions:
    options.reasoningEffort === undefined
      ? undefined
      : { proxy: { reasoningEffort: options.reasoningEffort } },
};

async function stream() {
  const seen = { reasoning: "", text: "", types: [], finishReason: null, errors: [] };
  const result = streamText({ ...request, onError: () => {} });
  for await (const part of result.fullStream) {
    if (seen.types.at(-1) !== part.type) seen.types.push(part.type);
    if (part.type === "reasoning-delta") seen.reasoning += part.text;
    if (part.type === "text-delta") seen.text += part.text;
    if (part.type === "finish") seen.finishReason = part.finishReason;
    if (part.type === "error") seen.errors.push(String(part.error?.message ?? part.error));
  }
  const usage = seen.errors.length === 0 ? await result.totalUsage : null;
  return { ...seen, reasoningTokens: usage?.outputTokenDetails?.reasoningTokens ?? null };
}

async function generate() {
  const result = await generateText(request);
  return {
    reasoning: result.reasoningText ?? "",
    text: result.text,
    types: result.content.map((part) => part.type),
    finishReason: result.finishReason,
    errors: [],
    reasoningTokens: result.usage?.outputTokenDetails?.reasoningTokens ?? null,
  };
}

process.stdout.write(`${JSON.stringify(await (options.generate ? generate() : stream()))}\n`);
