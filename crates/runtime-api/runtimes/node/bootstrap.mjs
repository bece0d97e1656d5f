// Ember's Node.js runtime.
//
// Loads the handler named by _HANDLER (`file.export`; `file` may be a path such as
// `src/app`, and resolves to file.js, file.mjs or file.cjs in the task root, CommonJS or ES
// module alike), then serves invocations from the Lambda Runtime API. Handlers may be async
// (or return a promise), or take a callback as their third argument. console.* lines are
// prefixed with the time, the request id and the level, as on Lambda. With
// AWS_LAMBDA_MAX_CONCURRENCY=N above 1, N loops take invocations at once; each console line
// carries the request id of the invocation that printed it.

import { AsyncLocalStorage } from 'node:async_hooks';
import http from 'node:http';
import net from 'node:net';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';

const env = process.env;
const [HOST, PORT] = env.AWS_LAMBDA_RUNTIME_API.split(':');
const PREFIX = '/2018-06-01/runtime';
const TASK_ROOT = env.LAMBDA_TASK_ROOT || '/var/task';
const CONCURRENCY = Math.max(1, Number.parseInt(env.AWS_LAMBDA_MAX_CONCURRENCY || '1', 10) || 1);
// One connection per loop: each keeps a `/next` outstanding.
const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });

function request(method, route, body = '', headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port: PORT, method, path: PREFIX + route, agent,
        headers: { ...headers, 'content-length': Buffer.byteLength(body) } },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setNoDelay(true);
    req.end(body);
  });
}

// The request id of the invocation running in the current async context.
const current = new AsyncLocalStorage();
for (const [method, level] of [['log', 'INFO'], ['info', 'INFO'], ['warn', 'WARN'], ['error', 'ERROR'], ['debug', 'DEBUG'], ['trace', 'TRACE']]) {
  // Pipes are written synchronously on Linux: a line is out before the response is posted.
  const stream = level === 'INFO' || level === 'DEBUG' ? process.stdout : process.stderr;
  console[method] = (...args) => {
    const text = format(...args).replace(/\n/g, '\r');
    const requestId = current.getStore() || 'undefined';
    stream.write(`${new Date().toISOString()}\t${requestId}\t${level}\t${text}\n`);
  };
}

function errorBody(err) {
  if (err instanceof Error) {
    return { errorType: err.name || 'Error', errorMessage: err.message, trace: String(err.stack || '').split('\n') };
  }
  return { errorType: typeof err, errorMessage: typeof err === 'string' ? err : JSON.stringify(err) ?? String(err), trace: [] };
}

async function fail(route, body) {
  console.error(`${body.errorType}: ${body.errorMessage}`);
  await request('POST', route, JSON.stringify(body), { 'lambda-runtime-function-error-type': body.errorType });
}

async function initError(errorType, errorMessage, trace = []) {
  await fail('/init/error', { errorType, errorMessage, trace });
  process.exit(1);
}

async function loadHandler(spec) {
  const dot = spec.lastIndexOf('.');
  const modulePath = spec.slice(0, dot);
  const name = spec.slice(dot + 1);
  const base = path.resolve(TASK_ROOT, modulePath);
  const file = ['.js', '.mjs', '.cjs'].map((ext) => base + ext).find((f) => existsSync(f));
  if (!file) {
    return initError('Runtime.ImportModuleError', `Error: Cannot find module '${modulePath}'`);
  }
  let mod;
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (err) {
    if (err instanceof SyntaxError) return initError('Runtime.UserCodeSyntaxError', `${err.name}: ${err.message}`);
    if (err && (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
      return initError('Runtime.ImportModuleError', `${err.name}: ${err.message}`);
    }
    const body = errorBody(err);
    return initError(body.errorType, body.errorMessage, body.trace);
  }
  const handler = mod[name] ?? mod.default?.[name];
  if (typeof handler !== 'function') {
    return initError('Runtime.HandlerNotFound', `${modulePath}.${name} is undefined or not exported`);
  }
  return handler;
}

function invoke(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, value) => {
      if (settled) return;
      settled = true;
      if (err !== null && err !== undefined) reject(err);
      else resolve(value);
    };
    context.done = callback;
    context.succeed = (value) => callback(null, value);
    context.fail = (err) => callback(err ?? new Error('handled'));
    try {
      const result = handler(event, context, callback);
      if (result && typeof result.then === 'function') result.then((v) => callback(null, v), callback);
      else if (handler.length < 3) callback(null, result);
    } catch (err) {
      callback(err);
    }
  });
}

function makeContext(requestId, headers) {
  const deadline = Number(headers['lambda-runtime-deadline-ms'] || 0);
  const clientContext = headers['lambda-runtime-client-context'];
  const identity = headers['lambda-runtime-cognito-identity'];
  return {
    awsRequestId: requestId,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    callbackWaitsForEmptyEventLoop: true,
    clientContext: clientContext ? JSON.parse(clientContext) : undefined,
    identity: identity ? JSON.parse(identity) : undefined,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

async function serve(handler) {
  for (;;) {
    const next = await request('GET', '/invocation/next');
    const requestId = next.headers['lambda-runtime-aws-request-id'];
    if (next.headers['lambda-runtime-trace-id']) env._X_AMZN_TRACE_ID = next.headers['lambda-runtime-trace-id'];
    await current.run(requestId, () => answer(handler, requestId, next));
  }
}

async function answer(handler, requestId, next) {
  const route = `/invocation/${requestId}/`;
  let result;
  try {
    const event = next.body.length ? JSON.parse(next.body) : {};
    result = await invoke(handler, event, makeContext(requestId, next.headers));
  } catch (err) {
    await fail(route + 'error', errorBody(err));
    return;
  }
  let out;
  try {
    out = JSON.stringify(result === undefined ? null : result);
  } catch (err) {
    await fail(route + 'error', { errorType: 'Runtime.MarshalError', errorMessage: `Unable to stringify response body: ${err.message}`, trace: [] });
    return;
  }
  await request('POST', route + 'response', out);
}

// A first connection before the code loads: Ember tells the runtime's start from the
// code's init by when it arrives.
await new Promise((resolve) => {
  const socket = net.connect(Number(PORT), HOST, () => { socket.destroy(); resolve(); });
  socket.on('error', resolve);
});
const handler = await loadHandler(env._HANDLER);
await Promise.all(Array.from({ length: CONCURRENCY }, () => serve(handler)));
