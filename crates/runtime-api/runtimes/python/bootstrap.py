"""Ember's Python runtime.

Imports the handler named by _HANDLER (`module.function`, the module may be a path such as
`src/app`), then serves invocations from the Lambda Runtime API until the process is killed.
With AWS_LAMBDA_MAX_CONCURRENCY=N above 1, N threads serve invocations at once, each with
its own connection (handlers must then be thread-safe).

Everything here is on every cold start's critical path, so it imports only C modules:
it speaks HTTP/1.1 to the Runtime API over one raw keep-alive `_socket` (importing
`http.client` costs more than Python's own start), and encodes JSON through the `_json`
accelerator directly (`import json` pulls in `re` and `enum`, ~8 ms, to set up what the C
code does not use). A self-check falls back to the `json` module wherever the accelerator
differs.
"""

import _socket
import os
import sys
import time

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
PREFIX = "/2018-06-01/runtime"


def _c_codec():
    """(loads, dumps) over `_json`, matching json.loads / json.dumps defaults."""
    import _json

    constants = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}

    class Context:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = constants.__getitem__
        memo = {}

    scan = _json.make_scanner(Context())
    whitespace = " \t\n\r"

    def loads(data):
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        start = len(text) - len(text.lstrip(whitespace))
        try:
            value, end = scan(text, start)
        except StopIteration as stop:
            raise ValueError("Expecting value: char %d" % stop.value) from None
        if text[end:].strip(whitespace):
            raise ValueError("Extra data: char %d" % end)
        return value

    def default(value):
        raise TypeError("Object of type %s is not JSON serializable" % value.__class__.__name__)

    def dumps(value):
        encode = _json.make_encoder(
            {}, default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
        return "".join(encode(value, 0))

    sample = {"a": [1, 2.5, "\u00e9\"", None, True, {}], "b": -0.0}
    if dumps(sample) != '{"a": [1, 2.5, "\\u00e9\\"", null, true, {}], "b": -0.0}' or loads(dumps(sample)) != sample:
        raise ValueError("the _json accelerator differs from what this bootstrap expects")
    return loads, dumps


try:
    loads, dumps = _c_codec()
except Exception:  # another Python: the json module is always right, if slower to import
    from json import dumps, loads


class RuntimeClient:
    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        self.sock = None
        self.buf = b""

    def request(self, method, path, body=b"", headers=()):
        """One request; a broken connection is reopened once, so a dropped keep-alive
        connection costs a reconnect, not the environment."""
        for attempt in (1, 2):
            try:
                return self._exchange(method, path, body, headers)
            except OSError:
                self.close()
                if attempt == 2:
                    raise

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def connect(self):
        self.sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        self.sock.connect(self.address)
        self.buf = b""

    def _exchange(self, method, path, body, headers):
        if self.sock is None:
            self.connect()
        extra = "".join("%s: %s\r\n" % h for h in headers)
        head = "%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            method, PREFIX, path, API, len(body), extra)
        self.sock.sendall(head.encode("latin-1") + body)
        status, headers, data = self._read_response()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, data

    def _recv(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the Runtime API closed the connection")
        return chunk

    def _read_response(self):
        buf = self.buf
        while b"\r\n\r\n" not in buf:
            buf += self._recv()
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        parts = [rest]
        have = len(rest)
        while have < length:
            chunk = self._recv()
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self.buf = data[length:]
        return status, headers, data[:length]


class _Record:
    """An object whose attributes are a JSON document's keys, as Lambda's context gives them."""

    def __init__(self, doc, fields):
        for field in fields:
            setattr(self, field, doc.get(field) if isinstance(doc, dict) else None)


CLIENT_FIELDS = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")


def client_context(doc):
    context = _Record(doc, ("custom", "env"))
    context.client = _Record(doc.get("client") or {}, CLIENT_FIELDS) if isinstance(doc, dict) else None
    return context


def cognito_identity(doc):
    return _Record(doc, ("cognito_identity_id", "cognito_identity_pool_id"))


class LambdaContext:
    """The context object handlers receive, with Lambda's attribute names."""

    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
    function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
    log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
    log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")

    def __init__(self, request_id, deadline_ms, arn, client_context, identity):
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.client_context = client_context
        self.identity = identity
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))


def error_body(exc, request_id=None, skip_frames=0):
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)[skip_frames:]
    body = {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_list(frames),
    }
    if request_id:
        body["requestId"] = request_id
    print("[ERROR] %s: %s" % (body["errorType"], body["errorMessage"]), file=sys.stderr)
    if frames:
        print("Traceback (most recent call last):\n" + "".join(body["stackTrace"]).rstrip(), file=sys.stderr)
    return body


def init_error(client, error_type, message, stack=()):
    body = {"errorMessage": message, "errorType": error_type, "stackTrace": list(stack)}
    print("[ERROR] %s: %s" % (error_type, message), file=sys.stderr)
    client.request("POST", "/init/error", dumps(body).encode(),
                   (("Lambda-Runtime-Function-Error-Type", error_type),))
    sys.exit(1)


def load_handler(client, spec):
    module_path, _, name = spec.rpartition(".")
    module_name = module_path.replace("/", ".")
    try:
        __import__(module_name)
        module = sys.modules[module_name]
    except SyntaxError as exc:
        init_error(client, "Runtime.UserCodeSyntaxError", "Syntax error in module '%s': %s" % (module_name, exc))
    except ImportError as exc:
        init_error(client, "Runtime.ImportModuleError", "Unable to import module '%s': %s" % (module_name, exc))
    except Exception as exc:  # an error raised by the module's own top-level code
        body = error_body(exc, skip_frames=1)
        init_error(client, body["errorType"], body["errorMessage"], body["stackTrace"])
    handler = getattr(module, name, None)
    if handler is None:
        init_error(client, "Runtime.HandlerNotFound", "Handler '%s' missing on module '%s'" % (name, module_name))
    return handler


def serve(client, handler):
    """Takes invocations one after the other and answers each."""
    while True:
        _, headers, body = client.request("GET", "/invocation/next")
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        trace = headers.get("lambda-runtime-trace-id")
        if trace:
            os.environ["_X_AMZN_TRACE_ID"] = trace
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        context_header = headers.get("lambda-runtime-client-context")
        identity_header = headers.get("lambda-runtime-cognito-identity")
        context = LambdaContext(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms", "0")),
            headers.get("lambda-runtime-invoked-function-arn", ""),
            client_context(loads(context_header)) if context_header else None,
            cognito_identity(loads(identity_header)) if identity_header else None,
        )
        path = "/invocation/%s/" % request_id
        try:
            event = loads(body) if body else {}
            result = handler(event, context)
        except Exception as exc:
            err = error_body(exc, request_id, skip_frames=1)
            client.request("POST", path + "error", dumps(err).encode(),
                           (("Lambda-Runtime-Function-Error-Type", err["errorType"]),))
            continue
        try:
            out = dumps(result).encode()
        except (TypeError, ValueError) as exc:
            err = {"errorMessage": "Unable to marshal response: %s" % exc, "errorType": "Runtime.MarshalError",
                   "requestId": request_id, "stackTrace": []}
            print("[ERROR] Runtime.MarshalError: %s" % err["errorMessage"], file=sys.stderr)
            client.request("POST", path + "error", dumps(err).encode(),
                           (("Lambda-Runtime-Function-Error-Type", "Runtime.MarshalError"),))
            continue
        client.request("POST", path + "response", out)


def main():
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    version = "python%d.%d" % sys.version_info[:2]
    sys.path[:0] = [task_root, "/opt/python", "/opt/python/lib/%s/site-packages" % version]
    client = RuntimeClient(API)
    # Connected before the code loads: Ember tells the runtime's start from the code's init
    # by when this connection arrives.
    client.connect()
    handler = load_handler(client, os.environ["_HANDLER"])
    concurrency = int(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY", "1") or "1")
    if concurrency > 1:
        import threading

        for _ in range(concurrency - 1):
            threading.Thread(target=serve, args=(RuntimeClient(API), handler), daemon=True).start()
    serve(client, handler)


if __name__ == "__main__":
    main()
