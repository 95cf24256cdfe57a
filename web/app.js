// PAI's web app: sign-in, then chat, memories and documents. Plain ES modules, no build step.
//
// The page makes no API call until a key has been entered: before that it loads only its own
// files and config.json (where the API is). The key is kept in sessionStorage (this tab only)
// unless "Remember on this device" is ticked, which keeps it in localStorage until sign-out.

import { Api, ApiError, loadConfig } from "./js/api.js";
import { ChatView } from "./js/chat.js";
import { DocumentsView } from "./js/documents.js";
import { byId } from "./js/dom.js";
import { MemoriesView } from "./js/memories.js";

const KEY_NAME = "pai.apiKey";
const VIEWS = ["chat", "memories", "documents"];

function storages() {
  // Either may be unavailable (storage turned off); the key then lasts as long as the page.
  const found = [];
  for (const name of ["sessionStorage", "localStorage"]) {
    try {
      if (window[name]) found.push(window[name]);
    } catch {
      // access denied
    }
  }
  return found;
}

function storedKey() {
  for (const storage of storages()) {
    const key = storage.getItem(KEY_NAME);
    if (key) return key;
  }
  return null;
}

function forgetKey() {
  for (const storage of storages()) storage.removeItem(KEY_NAME);
}

function keepKey(key, remember) {
  forgetKey();
  try {
    (remember ? window.localStorage : window.sessionStorage).setItem(KEY_NAME, key);
  } catch {
    // not kept: this page still has it
  }
}

class App {
  constructor(config) {
    this.config = config;
    this.api = null;
    this.current = null;
    this.signin = byId("signin");
    this.signinForm = byId("signin-form");
    this.keyInput = byId("api-key");
    this.remember = byId("remember");
    this.signinError = byId("signin-error");
    this.saveButton = byId("api-key-save");
    this.nav = byId("nav");
    this.signOutButton = byId("sign-out");
    this.views = {
      chat: new ChatView(this),
      memories: new MemoriesView(this),
      documents: new DocumentsView(this),
    };
    this.signinForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn();
    });
    this.signOutButton.addEventListener("click", () => this.signOut("Signed out. The key is no longer kept here."));
    window.addEventListener("hashchange", () => this.route());
  }

  start() {
    const key = storedKey();
    if (key) this.enter(key);
    else this.showSignIn("");
  }

  async signIn() {
    const key = this.keyInput.value.trim();
    if (!key) {
      this.signinError.textContent = "Paste your API key first.";
      this.keyInput.focus();
      return;
    }
    this.saveButton.disabled = true;
    this.signinError.textContent = "Checking the key…";
    const api = new Api(this.config, key);
    try {
      await api.post("/memory", { action: "list", limit: 1 });
    } catch (error) {
      this.signinError.textContent =
        error.status === 401 ? "That key was not accepted. Check it and try again." : error.message;
      this.keyInput.focus();
      return;
    } finally {
      this.saveButton.disabled = false;
    }
    keepKey(key, this.remember.checked);
    this.keyInput.value = "";
    this.enter(key);
  }

  enter(key) {
    this.api = new Api(this.config, key);
    this.signin.hidden = true;
    this.signinError.textContent = "";
    this.nav.hidden = false;
    this.signOutButton.hidden = false;
    this.route();
  }

  signOut(message) {
    forgetKey();
    this.api = null;
    this.current = null;
    for (const view of Object.values(this.views)) view.reset();
    this.showSignIn(message);
  }

  showSignIn(message) {
    this.nav.hidden = true;
    this.signOutButton.hidden = true;
    for (const name of VIEWS) byId(`view-${name}`).hidden = true;
    this.signin.hidden = false;
    this.signinError.textContent = message;
    this.keyInput.focus();
  }

  route() {
    if (!this.api) return;
    const wanted = location.hash.slice(1);
    // Another fragment (the skip link's #main) leaves the view as it is.
    if (!VIEWS.includes(wanted) && this.current) return;
    const current = VIEWS.includes(wanted) ? wanted : "chat";
    this.current = current;
    for (const name of VIEWS) byId(`view-${name}`).hidden = name !== current;
    for (const link of this.nav.querySelectorAll("a")) {
      if (link.getAttribute("href") === `#${current}`) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    this.views[current].show();
  }

  // What every view does with a failed request: a key that stopped working signs the user out.
  failed(error) {
    if (error instanceof ApiError && error.status === 401) {
      this.signOut("Your API key was not accepted (revoked or mistyped?). Sign in again.");
    }
  }
}

async function main() {
  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    const fatal = byId("fatal");
    fatal.textContent = `The app could not load its configuration (${error.message}).`;
    fatal.hidden = false;
    return;
  }
  const app = new App(config);
  app.start();
  document.body.dataset.ready = "true";
}

main();
