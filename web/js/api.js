// The PAI HTTP API as the page uses it. The API key goes in the Authorization header of requests
// to the API's own URLs (config.json's apiUrl and chatStreamUrl) and nowhere else; no cookies are
// sent (credentials: "omit").

export class ApiError extends Error {
  constructor(status, code, message, field = undefined) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

// config.json, from the page's own origin: where the API is. Not an API call: it carries no key.
export async function loadConfig() {
  const response = await fetch("config.json", { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  const config = await response.json();
  const apiUrl = typeof config.apiUrl === "string" ? config.apiUrl.replace(/\/+$/, "") : "";
  const chatStreamUrl =
    typeof config.chatStreamUrl === "string" && config.chatStreamUrl ? config.chatStreamUrl.replace(/\/+$/, "") : null;
  return { apiUrl, chatStreamUrl };
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's or CDN's page
  }
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error.message === "string") {
    return new ApiError(response.status, String(error.code ?? "error"), error.message, error.field);
  }
  return new ApiError(response.status, "http_error", `The API answered HTTP ${response.status}.`);
}

function unreachable(cause) {
  const error = new ApiError(0, "unreachable", "The API could not be reached. Check your connection and try again.");
  error.cause = cause;
  return error;
}

export class Api {
  constructor(config, key) {
    this.config = config;
    this.key = key;
  }

  headers() {
    return { Authorization: `Bearer ${this.key}`, "Content-Type": "application/json" };
  }

  // A POST to the API with no cookies, cache or referrer. A network failure becomes "unreachable" (an
  // abort stays an abort) and an answer other than 2xx the API's error.
  async send(url, body, { accept = undefined, signal } = {}) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: accept ? { ...this.headers(), Accept: accept } : this.headers(),
        body: JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
        referrerPolicy: "no-referrer",
        signal,
      });
    } catch (cause) {
      if (cause?.name === "AbortError") throw cause;
      throw unreachable(cause);
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  async post(path, body, { signal } = {}) {
    const response = await this.send(this.config.apiUrl + path, body, { signal });
    return response.json();
  }

  // POST /chat with "stream": true: yields {event, data} as the server-sent events arrive
  // ("delta" {text}, then "done" with the whole reply, or "error" {error}).
  async *chatStream(body, { signal } = {}) {
    const base = this.config.chatStreamUrl ?? this.config.apiUrl;
    const response = await this.send(`${base}/chat`, { ...body, stream: true }, {
      accept: "text/event-stream",
      signal,
    });
    const type = response.headers.get("content-type") ?? "";
    if (!type.startsWith("text/event-stream")) {
      // A plain JSON answer (a server that does not stream): the same reply, all at once.
      const reply = await response.json();
      yield { event: "done", data: reply };
      return;
    }
    if (!response.body) throw new ApiError(0, "no_stream", "This browser cannot read a streamed reply.");
    for await (const { event, data } of readEvents(response.body)) {
      let parsed;
      try {
        parsed = JSON.parse(data);
      } catch {
        continue; // not one of the API's events
      }
      yield { event, data: parsed };
    }
  }

  // POST /documents upload, with upload progress (fetch cannot report it; XMLHttpRequest can).
  upload(body, onProgress) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      request.open("POST", `${this.config.apiUrl}/documents`);
      request.withCredentials = false;
      for (const [name, value] of Object.entries(this.headers())) request.setRequestHeader(name, value);
      request.responseType = "text";
      request.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      request.addEventListener("load", () => {
        let parsed = null;
        try {
          parsed = JSON.parse(request.responseText);
        } catch {
          // handled below
        }
        if (request.status >= 200 && request.status < 300 && parsed) {
          onProgress(1);
          resolve(parsed);
          return;
        }
        const error = parsed && parsed.error;
        reject(
          error && typeof error.message === "string"
            ? new ApiError(request.status, String(error.code ?? "error"), error.message, error.field)
            : new ApiError(request.status, "http_error", `The API answered HTTP ${request.status}.`),
        );
      });
      request.addEventListener("error", () => reject(unreachable(null)));
      request.addEventListener("abort", () => reject(new ApiError(0, "aborted", "The upload was cancelled.")));
      request.send(JSON.stringify({ action: "upload", ...body }));
    });
  }
}

// Server-sent events from a byte stream (the text/event-stream format: "field: value" lines, events
// separated by a blank line, "data" lines joined with newlines, ":" comments ignored).
export async function* readEvents(stream) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      // A "\r" at the very end may be the first half of a "\r\n" still on its way.
      const held = !done && buffer.endsWith("\r") ? "\r" : "";
      if (held) buffer = buffer.slice(0, -1);
      buffer = buffer.replace(/\r\n?/g, "\n");
      let cut = buffer.indexOf("\n\n");
      while (cut >= 0) {
        const event = parseEvent(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
        if (event) yield event;
        cut = buffer.indexOf("\n\n");
      }
      buffer += held;
      if (done) {
        const event = parseEvent(buffer);
        if (event) yield event;
        return;
      }
    }
  } finally {
    // Also when the reader of these events stops early: the connection is let go.
    reader.cancel().catch(() => {});
  }
}

export function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: data.join("\n") } : null;
}
