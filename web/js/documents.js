// Documents: upload (drag and drop, or the file input) with progress, list a page at a time, delete.

import { byId, bytes, clear, confirmButton, h, time } from "./dom.js";
import { PagedList } from "./paged.js";

const MAX_FILE_BYTES = 4 * 1024 * 1024;
const TYPES = {
  txt: "text/plain",
  text: "text/plain",
  md: "text/markdown",
  markdown: "text/markdown",
  html: "text/html",
  htm: "text/html",
  pdf: "application/pdf",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
};

export function contentTypeOf(name) {
  const dot = name.lastIndexOf(".");
  return dot < 0 ? null : (TYPES[name.slice(dot + 1).toLowerCase()] ?? null);
}

export class DocumentsView {
  constructor(app) {
    this.app = app;
    this.list = byId("document-list");
    this.status = byId("document-status");
    this.uploads = byId("upload-list");
    this.category = byId("document-category");
    this.input = byId("document-file");
    this.zone = byId("drop-zone");
    this.pages = new PagedList(app, "/documents", {
      list: this.list,
      more: byId("document-more"),
      status: this.status,
      item: (doc) => this.item(doc),
      empty: "No documents yet.",
    });
    this.loaded = false;
    this.queue = Promise.resolve();
    this.input.addEventListener("change", () => {
      this.add([...this.input.files]);
      this.input.value = "";
    });
    this.zone.addEventListener("dragover", (event) => {
      if (!event.dataTransfer?.types.includes("Files")) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      this.zone.classList.add("over");
    });
    this.zone.addEventListener("dragleave", () => this.zone.classList.remove("over"));
    this.zone.addEventListener("drop", (event) => {
      event.preventDefault();
      this.zone.classList.remove("over");
      this.add([...(event.dataTransfer?.files ?? [])]);
    });
    // A file dropped beside the zone would make the browser open it in place of the app.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => {
        if (event.dataTransfer?.types.includes("Files") && !this.zone.contains(event.target)) event.preventDefault();
      });
    }
  }

  show() {
    if (!this.loaded) this.reload();
  }

  reset() {
    this.loaded = false;
    this.pages.clear();
    clear(this.uploads);
    this.status.textContent = "";
  }

  async reload() {
    this.loaded = true;
    await this.pages.reload();
  }

  // Files go up one at a time, in the order given.
  add(files) {
    for (const file of files) {
      const progress = h("progress", { max: "1", value: "0" });
      const state = h("span", { class: "state" }, "Waiting…");
      const row = h("li", { class: "upload" }, h("span", { class: "name" }, file.name), progress, state);
      this.uploads.prepend(row);
      this.queue = this.queue.then(() => this.upload(file, progress, state, row));
    }
  }

  async upload(file, progress, state, row) {
    const contentType = contentTypeOf(file.name);
    if (!contentType) {
      return this.fail(row, state, "Not a supported type: text, Markdown, HTML, PDF or Word (.docx).");
    }
    if (file.size > MAX_FILE_BYTES) return this.fail(row, state, `Too large: at most ${bytes(MAX_FILE_BYTES)}.`);
    state.textContent = "Reading…";
    try {
      const content = await base64Of(file);
      state.textContent = "Uploading…";
      const request = { name: file.name, contentType, content };
      const category = this.category.value.trim();
      if (category) request.category = category;
      const doc = await this.app.api.upload(request, (fraction) => {
        progress.value = fraction;
        state.textContent = fraction < 1 ? `Uploading… ${Math.round(fraction * 100)}%` : "Reading the document…";
      });
      progress.value = 1;
      row.classList.add("done");
      state.textContent = doc.duplicate ? "Already uploaded." : `Added: ${passages(doc)}.`;
      this.list.querySelector(`[data-id="${CSS.escape(doc.id)}"]`)?.remove();
      this.list.prepend(this.item(doc));
      this.loaded = true;
      this.status.textContent = "";
    } catch (error) {
      this.fail(row, state, error.message ?? String(error));
      this.app.failed(error);
    }
  }

  fail(row, state, message) {
    row.classList.add("failed");
    state.textContent = message;
    state.setAttribute("role", "alert");
  }

  item(doc) {
    const details = [
      typeof doc.pages === "number" ? `${doc.pages} page${doc.pages === 1 ? "" : "s"}` : null,
      passages(doc),
      bytes(doc.bytes),
    ].filter(Boolean);
    const element = h(
      "article",
      { class: "card document", "data-testid": "document-item", "data-id": doc.id },
      h("h3", { class: "name" }, String(doc.name)),
      h(
        "p",
        { class: "meta" },
        h("span", { class: "chip" }, String(doc.category ?? "general")),
        details.join(" · "),
        " · ",
        time(doc.createdAt),
        doc.status && doc.status !== "ready" ? h("span", { class: "status" }, ` ${doc.status}`) : null,
      ),
      doc.failure ? h("p", { class: "error" }, String(doc.failure)) : null,
    );
    element.append(
      h(
        "div",
        { class: "actions" },
        confirmButton("Delete", "Really delete?", () => this.remove(doc, element)),
      ),
    );
    return element;
  }

  async remove(doc, element) {
    try {
      await this.app.api.post("/documents", { action: "delete", id: doc.id });
    } catch (error) {
      if (error.status !== 404) {
        this.status.textContent = error.message;
        this.app.failed(error);
        return;
      }
    }
    element.remove();
    this.status.textContent = `Deleted ${doc.name}.`;
  }
}

function passages(doc) {
  const count = doc.passages;
  return typeof count === "number" ? `${count} passage${count === 1 ? "" : "s"}` : "";
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      const url = String(reader.result);
      resolve(url.slice(url.indexOf(",") + 1));
    });
    reader.addEventListener("error", () => reject(new Error(`Could not read ${file.name}.`)));
    reader.readAsDataURL(file);
  });
}
