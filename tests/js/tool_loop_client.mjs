// Runs the AI SDK's tool loop (`ai` 7's `streamText` with tools that have `execute`, through
// the OpenAI-compatible provider) against the proxy's /v1/chat/completions, as an app built on
// the AI SDK gives a model tools.
//
//   node tool_loop_client.mjs '{"baseURL": "http://.../v1", "model": "...", "prompt": "...",
//                               "tools": ["get_weather", "get_time"]}'
//
// Each named tool takes the fake upstream's call input ({city, call, note}) and answers
// {tool, city, call, forecast}. `stopWhen: stepCountIs(3)`: the model's calls, their
// execution, the results sent back, the final text.
// Prints one JSON line: {executions, calls, texts, steps, types, errors, requests}:
// `executions` what each execute got ({tool, toolCallId, input}) in the order they ran,
// `calls` the stream's tool-call parts ({toolCallId, toolName, input}), `texts` each step's
// text deltas joined, `steps` each finish-step's finish reason, `types` the stream's part
// types in order with repeats folded, `errors` its error and tool-error parts (and a
// rejection), `requests` the JSON bodies the SDK posted to the proxy.
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { stepCountIs, streamText, tool } from "ai7";
import { z } from "zod";

const options = JSON.parse(process.argv[2]);
const requests = [];
const provider = createOpenAICompatible({
  name: "proxy",
  baseURL: options.baseURL,
  includeUsage: true, // stream_options.include_usage, as apps set it: a usage chunk after the calls
  fetch: async (url, init) => {
    requests.push(JSON.parse(init.body));
    return fetch(url, init);
  },
});

const executions = [];
const CALL_INPUT = z.object({ city: z.string(), call: z.number(), note: z.string() });

function callable(name) {
  return tool({
    description: `The ${name.replace("get_", "")} in a city`,
    inputSchema: CALL_INPUT,
    execute: async (input, { toolCallId }) => {
      executions.push({ tool: name, toolCallId, input });
      return { tool: name, city: input.city, call: input.call, forecast: "sunny, 21 °C 🌤" };
    },
  });
}

const seen = { calls: [], texts: [], steps: [], types: [], errors: [] };
try {
  const result = streamText({
    model: provider(options.model),
    prompt: options.prompt,
    tools: Object.fromEntries(options.tools.map((name) => [name, callable(name)])),
    stopWhen: stepCountIs(3),
    maxRetries: 0,
    onError: () => {},
  });
  for await (const part of result.fullStream) {
    if (seen.types.at(-1) !== part.type) seen.types.push(part.type);
    if (part.type === "start-step") seen.texts.push("");
    if (part.type === "text-delta") seen.texts[seen.texts.length - 1] += part.text;
    if (part.type === "tool-call") {
      seen.calls.push({ toolCallId: part.toolCallId, toolName: part.toolName, input: part.input });
    }
    if (part.type === "finish-step") seen.steps.push(part.finishReason);
    if (part.type === "error" || part.type === "tool-error") {
      seen.errors.push(String(part.error?.message ?? part.error));
    }
  }
} catch (error) {
  seen.errors.push(`rejected: ${error?.message ?? error}`);
}

process.stdout.write(`${JSON.stringify({ ...seen, executions, requests })}\n`);
