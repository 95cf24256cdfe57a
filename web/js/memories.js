// Memories: newest first, by category and origin, a page at a time (the API's cursor); search;
// delete; and the history of a memory that has changed (a learned one refined by later chats).

import { byId, clear, confirmButton, h, time } from "./dom.js";
import { renderMarkdown } from "./markdown.js";
import { PagedList } from "./paged.js";

export class MemoriesView {
  constructor(app) {
    this.app = app;
    this.list = byId("memory-list");
    this.more = byId("memory-more");
    this.status = byId("memory-status");
    this.query = byId("memory-query");
    this.category = byId("memory-category");
    this.origin = byId("memory-origin");
    this.categories = byId("memory-categories");
    this.pages = new PagedList(app, "/memory", {
      list: this.list,
      more: this.more,
      status: this.status,
      item: (memory) => this.item(memory),
      empty: "No memories yet.",
      filters: () => this.filters(),
    });
    this.loaded = false;
    this.seenCategories = new Set();
    byId("memory-search").addEventListener("submit", (event) => {
      event.preventDefault();
      this.query.value.trim() ? this.search() : this.reload();
    });
    byId("memory-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      this.reload();
    });
    byId("memory-clear").addEventListener("click", () => {
      this.query.value = "";
      this.category.value = "";
      this.origin.value = "";
      this.reload();
    });
  }

  show() {
    if (!this.loaded) this.reload();
  }

  reset() {
    this.loaded = false;
    this.pages.clear();
    this.seenCategories.clear();
    clear(this.categories);
    this.status.textContent = "";
  }

  filters() {
    const filters = {};
    const category = this.category.value.trim();
    if (category) filters.category = category;
    if (this.origin.value) filters.origin = this.origin.value;
    return filters;
  }

  async reload() {
    this.loaded = true;
    await this.pages.reload();
  }

  async search() {
    this.loaded = true;
    this.pages.clear();
    const generation = this.pages.generation;
    this.status.textContent = "Searching…";
    const request = { query: this.query.value.trim(), topK: 20, sources: ["memories"] };
    const { category } = this.filters();
    if (category) request.category = category;
    try {
      const answer = await this.app.api.post("/search", request);
      if (!this.pages.current(generation)) return; // a reload or another search has started since
      for (const result of answer.results) this.list.append(this.item(result, result.score));
      const count = answer.results.length;
      this.status.textContent = count ? `${count} found, most relevant first.` : "Nothing found.";
    } catch (error) {
      if (!this.pages.current(generation)) return;
      this.status.textContent = error.message;
      this.app.failed(error);
    }
  }

  item(memory, score = undefined) {
    this.noteCategory(memory.category);
    const changed = memory.updatedAt && memory.updatedAt !== memory.createdAt;
    const meta = h(
      "p",
      { class: "meta" },
      h("span", { class: "chip" }, String(memory.category ?? "general")),
      memory.origin ? h("span", { class: `origin origin-${memory.origin}` }, originLabel(memory.origin)) : null,
      time(memory.createdAt),
      changed ? h("span", { class: "changed" }, "updated ", time(memory.updatedAt)) : null,
      typeof score === "number" ? h("span", { class: "score" }, `relevance ${score.toFixed(2)}`) : null,
    );
    const history = h("div", { class: "history", hidden: true });
    const actions = h("div", { class: "actions" });
    const element = h(
      "article",
      { class: "card memory", "data-testid": "memory-item", "data-id": memory.id },
      h("div", { class: "markdown" }, renderMarkdown(memory.content ?? "")),
      meta,
      actions,
      history,
    );
    if (memory.origin === "learned" || changed) {
      const toggle = h("button", { type: "button", class: "quiet", "aria-expanded": "false" }, "History");
      toggle.addEventListener("click", () => this.toggleHistory(memory, toggle, history));
      actions.append(toggle);
    }
    actions.append(confirmButton("Delete", "Really delete?", () => this.remove(memory, element)));
    return element;
  }

  noteCategory(category) {
    if (!category || this.seenCategories.has(category)) return;
    this.seenCategories.add(category);
    this.categories.append(h("option", { value: category }));
  }

  async toggleHistory(memory, toggle, panel) {
    if (!panel.hidden) {
      panel.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
      return;
    }
    panel.hidden = false;
    toggle.setAttribute("aria-expanded", "true");
    panel.replaceChildren(h("p", {}, "Loading…"));
    try {
      const answer = await this.app.api.post("/memory", { action: "history", id: memory.id });
      const versions = h("ol", { class: "versions", "aria-label": "Versions, oldest first" });
      for (const version of answer.versions) {
        versions.append(
          h(
            "li",
            { class: version.validTo ? "version" : "version current" },
            h(
              "p",
              { class: "meta" },
              version.validTo ? "From " : "Current, since ",
              time(version.validFrom),
              version.validTo ? [" to ", time(version.validTo)] : null,
              version.reason ? h("span", { class: "reason" }, ` (${version.reason})`) : null,
            ),
            h("div", { class: "markdown" }, renderMarkdown(version.content ?? "")),
          ),
        );
      }
      panel.replaceChildren(h("h4", {}, "History"), versions);
    } catch (error) {
      panel.replaceChildren(h("p", { class: "error" }, error.message));
      this.app.failed(error);
    }
  }

  async remove(memory, element) {
    try {
      await this.app.api.post("/memory", { action: "delete", id: memory.id });
    } catch (error) {
      if (error.status !== 404) {
        this.status.textContent = error.message;
        this.app.failed(error);
        return;
      }
    }
    element.remove();
    this.status.textContent = "Memory deleted.";
    if (!this.list.childElementCount && !this.pages.cursor) {
      this.status.textContent = "Memory deleted. No memories left.";
    }
  }
}

function originLabel(origin) {
  return { api: "stored", learned: "learned from chat", import: "imported" }[origin] ?? String(origin);
}
