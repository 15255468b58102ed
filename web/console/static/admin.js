// The administration console: users (search, filters, sort, keyset pages), a user's page,
// the audit log. Routes live in the URL's fragment: #/users, #/users/42, #/audit?user_id=42.

import { api, describe, logout, onSignedInChange, signedIn } from "./api.js";
import { busy, field, h, loading, messages, option, signInView, time } from "./ui.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let me = null;

const SORTS = [
  ["-created_at", "Newest first"],
  ["created_at", "Oldest first"],
  ["username", "Username A–Z"],
  ["-username", "Username Z–A"],
  ["email", "Email A–Z"],
  ["-email", "Email Z–A"],
];
const EVENT_TYPES = [
  "user.registered", "user.updated", "user.deleted", "user.password_changed", "user.logged_in",
  "user.logged_out", "user.login_failed", "user.token_reuse_detected", "session.revoked",
  "user.verification_requested", "user.verified", "user.password_reset_requested",
  "user.password_reset", "user.email_changed", "user.mfa_enabled", "user.mfa_disabled",
];
const SIZES = ["10", "20", "50", "100"];

function parseRoute() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  return { path: path || "/users", params: new URLSearchParams(query) };
}

function go(path, params) {
  const query = params ? new URLSearchParams([...params].filter(([, v]) => v !== "")).toString() : "";
  const hash = `#${path}${query ? `?${query}` : ""}`;
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function start() {
  onSignedInChange((inside) => { if (!inside) { me = null; route(); } else route(); });
  window.addEventListener("hashchange", route);
  route();
}

async function route() {
  if (!signedIn()) {
    nav.hidden = true;
    who.replaceChildren();
    signInView(main, "Sign in to Warden admin", "For superusers. Everyone else manages their account at /account/.");
    return;
  }
  if (!me) {
    main.replaceChildren(loading());
    try {
      me = await api.get("/users/me");
    } catch (error) {
      const box = messages();
      box.error(error);
      main.replaceChildren(box.node);
      return;
    }
  }
  header();
  if (!me.is_superuser) {
    main.replaceChildren(h("section", { class: "card narrow" },
      h("h1", { text: "Superusers only" }),
      h("p", { text: `You are signed in as ${me.username}, who is not a superuser.` }),
      h("p", {}, h("a", { href: "/account/", text: "Go to your account" }))));
    return;
  }
  const { path, params } = parseRoute();
  const userMatch = path.match(/^\/users\/(\d{1,18})$/);
  if (userMatch) await userPage(userMatch[1]);
  else if (path === "/audit") await auditPage(params);
  else await usersPage(params);
  main.focus({ preventScroll: true });
}

function header() {
  nav.hidden = false;
  const out = h("button", { type: "button", class: "link", text: "Sign out" });
  out.addEventListener("click", () => logout().catch(() => {}));
  who.replaceChildren(h("span", { class: "muted", text: me.username }), " ", out);
  const { path } = parseRoute();
  for (const link of nav.querySelectorAll("a")) {
    const current = link.getAttribute("href") === `#${path.startsWith("/audit") ? "/audit" : "/users"}`;
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// --- keyset pages -------------------------------------------------------------------------

// One walk through a listing: the cursor of each page seen, so "previous" goes back along
// the path the API's next_cursor laid (the API has no backward cursor).
function pager(load, render, table) {
  const state = { cursors: [null], index: 0, next: null };
  const prev = h("button", { type: "button", text: "← Previous", disabled: true });
  const next = h("button", { type: "button", text: "Next →", disabled: true });
  const where = h("span", { class: "muted", "aria-live": "polite" });
  const box = messages();
  async function show() {
    table.setAttribute("aria-busy", "true");
    prev.disabled = next.disabled = true;
    box.clear();
    try {
      const page = await load(state.cursors[state.index]);
      state.next = page.next_cursor;
      render(page.items);
      where.textContent = page.items.length ? `Page ${state.index + 1}` : "Nothing found";
    } catch (error) {
      render([]);
      where.textContent = "";
      box.error(error);
    } finally {
      table.removeAttribute("aria-busy");
      prev.disabled = state.index === 0;
      next.disabled = !state.next;
    }
  }
  prev.addEventListener("click", () => { state.index -= 1; show(); });
  next.addEventListener("click", () => {
    state.cursors = state.cursors.slice(0, state.index + 1).concat([state.next]);
    state.index += 1;
    show();
  });
  return { node: h("div", { class: "pager" }, prev, where, next), box, show };
}

// --- users ------------------------------------------------------------------------------

async function usersPage(params) {
  const limit = SIZES.includes(params.get("limit")) ? params.get("limit") : "20";
  const q = field("Search", { type: "search", name: "q", value: params.get("q") || "", placeholder: "email, username or name", maxlength: 256 });
  const active = field("Active", { tag: "select", name: "is_active", options: [
    option("", "Any", !params.get("is_active")), option("true", "Active", params.get("is_active") === "true"),
    option("false", "Inactive", params.get("is_active") === "false")] });
  const superuser = field("Superuser", { tag: "select", name: "is_superuser", options: [
    option("", "Any", !params.get("is_superuser")), option("true", "Superusers", params.get("is_superuser") === "true"),
    option("false", "Others", params.get("is_superuser") === "false")] });
  const sort = field("Sort", { tag: "select", name: "sort", options: SORTS.map(([v, l]) => option(v, l, (params.get("sort") || "-created_at") === v)) });
  const size = field("Per page", { tag: "select", name: "limit", options: SIZES.map((s) => option(s, s, s === limit)) });
  const apply = h("button", { type: "submit", class: "primary", text: "Search" });
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Find users" },
    q.node, active.node, superuser.node, sort.node, size.node, h("div", { class: "actions" }, apply));
  const submit = () => go("/users", new URLSearchParams({
    q: q.input.value.trim(), is_active: active.input.value, is_superuser: superuser.input.value,
    sort: sort.input.value, limit: size.input.value,
  }));
  filters.addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  for (const select of [active.input, superuser.input, sort.input, size.input]) select.addEventListener("change", submit);

  const rows = h("tbody");
  const table = h("table", { class: "list users", style: null },
    h("caption", { class: "sr-only", text: "Users" }),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col", text: "Username" }), h("th", { scope: "col", text: "Email" }),
      h("th", { scope: "col", class: "wide", text: "Full name" }), h("th", { scope: "col", text: "Status" }),
      h("th", { scope: "col", class: "wide", text: "Created" }))),
    rows);
  const wrap = h("div", { class: "table-wrap", "data-rows": limit }, table);
  const query = new URLSearchParams({ limit });
  for (const name of ["q", "is_active", "is_superuser", "sort"]) if (params.get(name)) query.set(name, params.get(name));
  const pages = pager(
    (cursor) => api.get(`/users?${new URLSearchParams([...query, ...(cursor ? [["cursor", cursor]] : [])])}`),
    (items) => rows.replaceChildren(...items.map(userRow), ...filler(items.length, Number(limit), 5)),
    table);
  rows.replaceChildren(...filler(0, Number(limit), 5));
  const deleted = messages();
  if (params.get("deleted")) deleted.notice(`${params.get("deleted")} was deleted.`);
  main.replaceChildren(h("h1", { text: "Users" }), deleted.node, filters, pages.box.node, wrap, pages.node);
  await pages.show();
}

// Empty rows up to the page size: the table keeps its height while a page loads or when a
// page is short, so nothing below it jumps.
function filler(count, size, columns) {
  const rows = [];
  for (let i = count; i < size; i += 1) {
    rows.push(h("tr", { class: "filler", "aria-hidden": "true" }, ...Array.from({ length: columns }, () => h("td", {}, " "))));
  }
  return rows;
}

function badges(user) {
  return h("span", { class: "badges" },
    h("span", { class: user.is_active ? "badge ok" : "badge off", text: user.is_active ? "active" : "inactive" }),
    user.is_superuser ? h("span", { class: "badge su", text: "superuser" }) : null,
    user.is_verified === true ? h("span", { class: "badge", text: "verified" }) : null);
}

function userRow(user) {
  return h("tr", {},
    h("td", {}, h("a", { href: `#/users/${user.id}`, text: user.username })),
    h("td", { class: "clip", title: user.email, text: user.email }),
    h("td", { class: "wide clip", text: user.full_name || "—" }),
    h("td", {}, badges(user)),
    h("td", { class: "wide", text: time(user.created_at) }));
}

// --- one user ------------------------------------------------------------------------------

async function userPage(id) {
  main.replaceChildren(loading());
  let user;
  try {
    user = await api.get(`/users/${id}`);
  } catch (error) {
    const box = messages();
    box.error(error);
    main.replaceChildren(h("p", {}, h("a", { href: "#/users", text: "← Users" })), box.node);
    return;
  }
  const box = messages();
  const title = h("h1", { text: user.username });
  const summary = h("p", { class: "muted" });
  const state = h("div", { class: "badges-line" });
  const refresh = (next) => {
    user = next;
    title.textContent = user.username;
    summary.textContent = `#${user.id} · created ${time(user.created_at)} · updated ${time(user.updated_at)}`;
    state.replaceChildren(badges(user));
    toggles.replaceChildren(...toggleButtons());
  };
  const patch = (button, body, done) => busy(button, box, async () => {
    refresh(await api.patch(`/users/${user.id}`, body));
    box.notice(done);
  });

  const email = field("Email", { type: "email", name: "email", value: user.email, autocomplete: "off", required: true });
  const username = field("Username", { name: "username", value: user.username, autocomplete: "off", required: true, minlength: 3, maxlength: 32 });
  const fullName = field("Full name", { name: "full_name", value: user.full_name || "", autocomplete: "off", maxlength: 200 }, "Leave empty to clear it.");
  const save = h("button", { type: "submit", class: "primary", text: "Save" });
  const profile = h("form", { class: "card", "aria-labelledby": "profile-title" },
    h("h2", { id: "profile-title", text: "Profile" }), email.node, username.node, fullName.node,
    h("div", { class: "actions" }, save));
  profile.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = {};
    if (email.input.value.trim() !== user.email) body.email = email.input.value.trim();
    if (username.input.value.trim() !== user.username) body.username = username.input.value.trim();
    const name = fullName.input.value.trim() || null;
    if (name !== user.full_name) body.full_name = name;
    if (!Object.keys(body).length) { box.notice("Nothing to save."); return; }
    patch(save, body, "Saved.");
  });

  const toggles = h("div", { class: "actions wrap" });
  function toggleButtons() {
    const buttons = [];
    const active = h("button", { type: "button", text: user.is_active ? "Deactivate" : "Activate" });
    active.addEventListener("click", () => patch(active, { is_active: !user.is_active }, user.is_active ? "Deactivated: their sessions have ended." : "Activated."));
    buttons.push(active);
    const su = h("button", { type: "button", text: user.is_superuser ? "Revoke superuser" : "Grant superuser" });
    su.addEventListener("click", () => patch(su, { is_superuser: !user.is_superuser }, user.is_superuser ? "No longer a superuser." : "Now a superuser."));
    buttons.push(su);
    if ("is_verified" in user) {
      const verified = h("button", { type: "button", text: user.is_verified ? "Mark email unverified" : "Mark email verified" });
      verified.addEventListener("click", () => patch(verified, { is_verified: !user.is_verified }, user.is_verified ? "Email marked unverified." : "Email marked verified."));
      buttons.push(verified);
    }
    return buttons;
  }
  const access = h("section", { class: "card", "aria-labelledby": "access-title" },
    h("h2", { id: "access-title", text: "Access" }), state, toggles,
    "is_verified" in user ? null : h("p", { class: "hint", text: "This server does not report email verification." }));

  const revoke = h("button", { type: "button", text: "Sign out of every session" });
  revoke.addEventListener("click", () => busy(revoke, box, async () => {
    await api.del(`/users/${user.id}/sessions`);
    box.notice(`Every session of ${user.username} has ended.`);
  }));
  const sessions = h("section", { class: "card", "aria-labelledby": "sessions-title" },
    h("h2", { id: "sessions-title", text: "Sessions" }),
    h("p", { class: "hint", text: "Ends every login of this user at once; their tokens stop working." }),
    h("div", { class: "actions" }, revoke),
    h("p", {}, h("a", { href: `#/audit?user_id=${user.id}`, text: "This user's audit log →" })));

  const confirm = field(`Type ${user.username} to confirm`, { name: "confirm", autocomplete: "off", spellcheck: "false" });
  const remove = h("button", { type: "submit", class: "danger", text: "Delete user", disabled: true });
  confirm.input.addEventListener("input", () => { remove.disabled = confirm.input.value !== user.username; });
  const danger = h("form", { class: "card danger-zone", "aria-labelledby": "delete-title" },
    h("h2", { id: "delete-title", text: "Delete" }),
    h("p", { text: "Deleting a user cannot be undone." }), confirm.node, h("div", { class: "actions" }, remove));
  danger.addEventListener("submit", (event) => {
    event.preventDefault();
    if (confirm.input.value !== user.username) return;
    busy(remove, box, async () => {
      await api.del(`/users/${user.id}`);
      if (user.id === me.id) { me = null; }
      go("/users", new URLSearchParams({ deleted: user.username }));
    });
  });

  refresh(user);
  main.replaceChildren(h("p", {}, h("a", { href: "#/users", text: "← Users" })), title, summary, box.node,
    h("div", { class: "grid" }, profile, access, sessions, danger));
}

// --- audit log -----------------------------------------------------------------------------

async function auditPage(params) {
  const limit = SIZES.includes(params.get("limit")) ? params.get("limit") : "20";
  const userId = field("User id", { type: "number", name: "user_id", min: 1, inputmode: "numeric", value: params.get("user_id") || "" });
  const type = field("Event type", { name: "type", list: "event-types", value: params.get("type") || "", maxlength: 64, autocomplete: "off" });
  const types = h("datalist", { id: "event-types" }, ...EVENT_TYPES.map((t) => h("option", { value: t })));
  const size = field("Per page", { tag: "select", name: "limit", options: SIZES.map((s) => option(s, s, s === limit)) });
  const apply = h("button", { type: "submit", class: "primary", text: "Filter" });
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter the audit log" },
    userId.node, type.node, types, size.node, h("div", { class: "actions" }, apply));
  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    go("/audit", new URLSearchParams({ user_id: userId.input.value.trim(), type: type.input.value.trim(), limit: size.input.value }));
  });
  size.input.addEventListener("change", () => filters.requestSubmit());

  const rows = h("tbody");
  const table = h("table", { class: "list audit" },
    h("caption", { class: "sr-only", text: "Audit log" }),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col", text: "Time" }), h("th", { scope: "col", text: "Event" }),
      h("th", { scope: "col", text: "User" }), h("th", { scope: "col", class: "wide", text: "Details" }))),
    rows);
  const query = new URLSearchParams({ limit });
  for (const name of ["user_id", "type"]) if (params.get(name)) query.set(name, params.get(name));
  const pages = pager(
    (cursor) => api.get(`/audit?${new URLSearchParams([...query, ...(cursor ? [["cursor", cursor]] : [])])}`),
    (items) => rows.replaceChildren(...items.map(auditRow), ...filler(items.length, Number(limit), 4)),
    table);
  rows.replaceChildren(...filler(0, Number(limit), 4));
  const heading = params.get("user_id") ? `Audit log of user #${params.get("user_id")}` : "Audit log";
  main.replaceChildren(h("h1", { text: heading }), filters, pages.box.node,
    h("div", { class: "table-wrap" }, table), pages.node);
  await pages.show();
}

function auditRow(entry) {
  const data = { ...entry.data };
  const user = data.user && typeof data.user === "object" ? data.user : null;
  const label = user ? user.username : entry.user_id === null ? "—" : `#${entry.user_id}`;
  return h("tr", {},
    h("td", { text: time(entry.time) }),
    h("td", {}, h("code", { text: entry.type })),
    h("td", {}, entry.user_id === null ? "—" : h("a", { href: `#/users/${entry.user_id}`, text: label })),
    h("td", { class: "wide" }, h("details", {}, h("summary", { text: summarise(data) }),
      h("pre", { text: JSON.stringify(entry.data, null, 2) }))));
}

function summarise(data) {
  const parts = [];
  const user = data.user && typeof data.user === "object" ? data.user : null;
  if (user) {
    parts.push(user.email, user.is_active ? "active" : "inactive");
    if (user.is_superuser) parts.push("superuser");
  }
  for (const key of ["reason", "client_ip", "session_id"]) if (data[key]) parts.push(`${key}: ${data[key]}`);
  return parts.length ? parts.join(" · ") : "data";
}

start().catch((error) => {
  main.replaceChildren(h("p", { class: "error", role: "alert", text: describe(error) }));
});
