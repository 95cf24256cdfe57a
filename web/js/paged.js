// A list the API hands out a page at a time (POST {action: "list", limit, cursor}): the first page on
// reload(), the next one on "Load more", and a status line that says loading, empty or what failed.

import { clear } from "./dom.js";

const PAGE_SIZE = 20;

export class PagedList {
  // filters() adds the view's own fields to each list request; item(record) builds a record's element.
  constructor(app, path, { list, more, status, item, empty, filters = () => ({}) }) {
    this.app = app;
    this.path = path;
    this.list = list;
    this.more = more;
    this.status = status;
    this.item = item;
    this.empty = empty;
    this.filters = filters;
    this.cursor = null;
    // Moves on every clear(): an answer to a request made before it belongs to a list that is gone
    // (a reload or a search started since) and is dropped.
    this.generation = 0;
    this.more.addEventListener("click", () => this.page());
  }

  // Empty, and the next page is the first again.
  clear() {
    this.generation += 1;
    this.cursor = null;
    clear(this.list);
    this.more.hidden = true;
  }

  // True while nothing has cleared the list since `generation` was read.
  current(generation) {
    return generation === this.generation;
  }

  async reload() {
    this.clear();
    await this.page();
  }

  async page() {
    const request = { action: "list", limit: PAGE_SIZE, ...this.filters() };
    if (this.cursor) request.cursor = this.cursor;
    const generation = this.generation;
    this.status.textContent = "Loading…";
    this.more.disabled = true;
    try {
      const answer = await this.app.api.post(this.path, request);
      if (!this.current(generation)) return;
      for (const record of answer.items) this.list.append(this.item(record));
      this.cursor = answer.cursor ?? null;
      this.more.hidden = !this.cursor;
      this.status.textContent = this.list.childElementCount ? "" : this.empty;
    } catch (error) {
      if (!this.current(generation)) return;
      this.status.textContent = error.message;
      this.app.failed(error);
    } finally {
      this.more.disabled = false;
    }
  }
}
