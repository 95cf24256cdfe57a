// Chat: the conversation so far, a streamed reply growing as its events arrive, and the sources
// it cites under it. The session continues (sessionId) until "New chat".

import { ApiError } from "./api.js";
import { byId, clear, h } from "./dom.js";
import { renderMarkdown } from "./markdown.js";

export class ChatView {
  constructor(app) {
    this.app = app;
    this.sessionId = null;
    this.controller = null;
    this.log = byId("chat-log");
    this.input = byId("chat-input");
    this.sendButton = byId("chat-send");
    this.status = byId("chat-status");
    byId("chat-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => {
      // Enter sends; Shift+Enter (and Enter while an input method is composing) is a new line.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    byId("chat-new").addEventListener("click", () => {
      this.reset();
      this.input.focus();
    });
    this.reset();
  }

  show() {
    this.input.focus();
  }

  reset() {
    this.controller?.abort();
    this.controller = null;
    this.sessionId = null;
    clear(this.log).append(
      h("p", { class: "empty", id: "chat-empty" }, "Ask anything. Replies can draw on your memories and documents."),
    );
    this.status.textContent = "";
  }

  message(role, text = "") {
    document.getElementById("chat-empty")?.remove();
    const body = h("div", { class: role === "user" ? "body plain" : "body markdown" });
    const element = h(
      "article",
      { class: `message ${role}`, "data-testid": "chat-message", "data-role": role },
      h("h3", { class: "who" }, role === "user" ? "You" : "PAI"),
      body,
    );
    if (role === "user") body.textContent = text;
    this.log.append(element);
    element.scrollIntoView({ block: "end" });
    return { element, body };
  }

  async submit() {
    const text = this.input.value;
    if (!text.trim() || this.controller !== null || !this.app.api) return;
    this.input.value = "";
    this.status.textContent = "";
    this.message("user", text);
    const reply = this.message("assistant");
    reply.element.dataset.state = "streaming";
    reply.element.setAttribute("aria-busy", "true");
    const controller = new AbortController();
    this.controller = controller;
    this.sendButton.disabled = true;
    let written = "";
    try {
      const request = { message: text };
      if (this.sessionId) request.sessionId = this.sessionId;
      let done = null;
      for await (const { event, data } of this.app.api.chatStream(request, { signal: controller.signal })) {
        if (event === "delta" && typeof data.text === "string") {
          written += data.text;
          this.render(reply, written);
        } else if (event === "done") {
          done = data;
        } else if (event === "error") {
          const error = data.error ?? {};
          throw new ApiError(0, String(error.code ?? "error"), String(error.message ?? "The reply failed."));
        }
      }
      if (done === null) throw new ApiError(0, "cut_off", "The reply broke off before it was complete.");
      if (typeof done.sessionId === "string") this.sessionId = done.sessionId;
      this.render(reply, typeof done.reply === "string" ? done.reply : written);
      this.sources(reply, Array.isArray(done.sources) ? done.sources : []);
      reply.element.dataset.state = "done";
    } catch (error) {
      if (controller.signal.aborted) {
        reply.element.dataset.state = "stopped";
      } else {
        reply.element.dataset.state = "error";
        reply.element.append(h("p", { class: "error", role: "alert" }, error.message ?? String(error)));
        this.app.failed(error);
      }
    } finally {
      reply.element.removeAttribute("aria-busy");
      if (this.controller === controller) this.controller = null;
      this.sendButton.disabled = false;
    }
  }

  render(reply, text) {
    const nearBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80;
    reply.body.replaceChildren(renderMarkdown(text));
    if (nearBottom) this.log.scrollTop = this.log.scrollHeight;
  }

  sources(reply, sources) {
    if (!sources.length) return;
    const list = h("ul", { class: "sources", "aria-label": "Sources" });
    const seen = new Set();
    for (const source of sources) {
      const key = source.kind === "document" ? `d:${source.documentId}:${source.page}` : `m:${source.id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      list.append(source.kind === "document" ? documentSource(source) : this.memorySource(source));
    }
    reply.element.append(h("h4", { class: "sources-title" }, "Sources"), list);
  }

  memorySource(source) {
    const content = h("div", { class: "markdown source-content" });
    const details = h("details", {}, h("summary", {}, "Memory"), content);
    let loaded = false;
    details.addEventListener("toggle", async () => {
      if (!details.open || loaded) return;
      loaded = true;
      content.textContent = "Loading…";
      try {
        const memory = await this.app.api.post("/memory", { action: "retrieve", id: source.id });
        content.replaceChildren(renderMarkdown(memory.content));
      } catch (error) {
        loaded = false;
        content.textContent = error.status === 404 ? "This memory has been deleted." : error.message;
        if (error.status !== 404) this.app.failed(error);
      }
    });
    return h("li", { "data-testid": "source", "data-kind": "memory", title: score(source) }, details);
  }
}

function documentSource(source) {
  const page = typeof source.page === "number" ? `, page ${source.page}` : "";
  return h(
    "li",
    { "data-testid": "source", "data-kind": "document", title: score(source) },
    h("span", { class: "kind" }, "Document: "),
    h("a", { href: "#documents", class: "document-name" }, String(source.name ?? "a document")),
    page,
  );
}

function score(source) {
  return typeof source.score === "number" ? `relevance ${source.score.toFixed(2)}` : "";
}
