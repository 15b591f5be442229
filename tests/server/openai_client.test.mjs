// The official `openai` npm client (v4) against a running `kvserve serve` (chat template chatml).
// Run by ServerTest.OpenAINodeClient with KVSERVE_URL=http://127.0.0.1:PORT/v1; by hand:
//   tests/server/setup_node.sh && KVSERVE_URL=http://127.0.0.1:8080/v1 node --test tests/server/openai_client.test.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';

const { default: OpenAI } = await import(
  new URL('./node/node_modules/openai/index.mjs', import.meta.url));
const baseURL = process.env.KVSERVE_URL ?? 'http://127.0.0.1:8080/v1';
const client = new OpenAI({ baseURL, apiKey: process.env.KVSERVE_API_KEY ?? 'none', maxRetries: 0 });

test('models.list', async () => {
  const models = await client.models.list();
  assert.ok(models.data.length >= 1);
  assert.equal(typeof models.data[0].id, 'string');
});

test('completions.create', async () => {
  const r = await client.completions.create({
    model: 'any', prompt: 'Once upon a time', max_tokens: 8, temperature: 0, ignore_eos: true,
  });
  assert.equal(r.object, 'text_completion');
  assert.equal(typeof r.choices[0].text, 'string');
  assert.equal(r.usage.completion_tokens, 8);
  assert.equal(r.usage.prompt_tokens_details.cached_tokens, 0);
});

test('chat.completions.create', async () => {
  const r = await client.chat.completions.create({
    model: 'any', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 5, temperature: 0,
  });
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
});

test('chat streaming with usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'any', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6, temperature: 0,
    stream: true, stream_options: { include_usage: true }, ignore_eos: true,
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    for (const c of chunk.choices) {
      text += c.delta?.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 6);
  assert.equal(typeof text, 'string');
});

test('completions streaming matches non-streaming', async () => {
  const params = { model: 'any', prompt: 'The dog', max_tokens: 10, temperature: 0, ignore_eos: true };
  const full = await client.completions.create(params);
  const stream = await client.completions.create({ ...params, stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, full.choices[0].text);
});

test('bad request surfaces as BadRequestError', async () => {
  await assert.rejects(
    client.completions.create({ model: 'any', prompt: 'x', temperature: -1 }),
    (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && err.param === 'temperature');
});
