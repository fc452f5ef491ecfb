// Runs the AI SDK's OpenAI provider (npm `@ai-sdk/openai`, with `ai` 7) against the proxy's
// /v1/responses: `createOpenAI({baseURL})(model)`, the provider's default model, calls the
// Responses API, as an app built on the AI SDK does.
//
//   node openai_responses_client.mjs '{"baseURL": "http://.../v1", "apiKey": "...",
//                                      "model": "...", "prompt": "...", "tool": false,
//                                      "store": null}'
//
// `streamText` read through `fullStream`. With `"tool": true` the request offers one tool,
// `get_weather`, with an `execute` that answers "sunny in <city>", and the SDK loops (up to
// 3 steps) until the model answers in text. `store`, when given, is the provider option.
// Prints one JSON line: {reasoning, text, types, finishReason, errors, toolInputs, steps,
// warnings}: `reasoning` and `text` the concatenated deltas of every step, `types` the
// stream's part types in order with repeats of one type folded into one.
import { createOpenAI } from "@ai-sdk/openai";
import { jsonSchema, stepCountIs, streamText, tool } from "ai7";

const options = JSON.parse(process.argv[2]);
const provider = createOpenAI({ baseURL: options.baseURL, apiKey: options.apiKey ?? "none" });

const weather = tool({
  description: "The weather in a city",
  inputSchema: jsonSchema({
    type: "object",
    properties: { city: { type: "string" } },
    required: ["city"],
  }),
  execute: async ({ city }) => `sunny in ${city}`,
});

const seen = { reasoning: "", text: "", types: [], finishReason: null, errors: [], toolInputs: [] };
const result = streamText({
  model: provider(options.model),
  prompt: options.prompt,
  maxRetries: 0,
  tools: options.tool ? { get_weather: weather } : undefined,
  stopWhen: stepCountIs(3),
  providerOptions: options.store == null ? undefined : { openai: { store: options.store } },
  onError: () => {},
});
for await (const part of result.fullStream) {
  if (seen.types.at(-1) !== part.type) seen.types.push(part.type);
  if (part.type === "reasoning-delta") seen.reasoning += part.text;
  if (part.type === "text-delta") seen.text += part.text;
  if (part.type === "tool-call") seen.toolInputs.push(part.input);
  if (part.type === "finish") seen.finishReason = part.finishReason;
  if (part.type === "error") seen.errors.push(String(part.error?.message ?? part.error));
}
const steps = seen.errors.length === 0 ? await result.steps : [];
const warnings = steps.flatMap((step) => step.warnings ?? []).map((w) => w.message ?? w.type);
process.stdout.write(`${JSON.stringify({ ...seen, steps: steps.length, warnings })}\n`);
