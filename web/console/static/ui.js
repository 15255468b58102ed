// Small DOM helpers and the sign-in form both consoles share. Text goes in as text nodes,
// never as HTML: whatever a user's name holds, it cannot become markup.

import { describe, login, loginMfa } from "./api.js";

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let fieldCount = 0;

// A labelled field: the label names the input for screen readers and for tests.
export function field(label, attrs = {}, hint = null) {
  const id = attrs.id || `f${++fieldCount}`;
  const input = attrs.tag === "select"
    ? h("select", { ...attrs, tag: undefined, id, options: undefined }, ...(attrs.options || []))
    : h("input", { type: "text", ...attrs, id });
  const hintNode = hint ? h("small", { id: `${id}-hint`, class: "hint", text: hint }) : null;
  if (hintNode) input.setAttribute("aria-describedby", hintNode.id);
  return { input, node: h("div", { class: "field" }, h("label", { for: id, text: label }), input, hintNode) };
}

export function option(value, label, selected = false) {
  return h("option", { value, text: label, selected });
}

// A place for one message: errors are alerts (read out at once), notices are status.
export function messages() {
  const node = h("div", { class: "messages" });
  return {
    node,
    error(error) {
      node.replaceChildren(h("p", { class: "error", role: "alert", text: typeof error === "string" ? error : describe(error) }));
    },
    notice(text) {
      node.replaceChildren(h("p", { class: "notice", role: "status", text }));
    },
    clear() {
      node.replaceChildren();
    },
  };
}

// Runs `work` with the button disabled and marked busy; reports a failure to `box`.
export async function busy(button, box, work) {
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.textContent = `${label}…`;
  box.clear();
  try {
    return await work();
  } catch (error) {
    box.error(error);
    return undefined;
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.textContent = label;
  }
}

export function time(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function loading(text = "Loading…") {
  return h("p", { class: "loading", role: "status", text });
}

// The sign-in form, then the second step when the account has TOTP (403 mfa_required).
export function signInView(root, title, note) {
  const box = messages();
  const user = field("Username or email", { name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
  const pass = field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", class: "primary", text: "Sign in" });
  const form = h("form", { class: "card narrow", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title", text: title }),
    note ? h("p", { class: "muted", text: note }) : null,
    user.node, pass.node, box.node, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const step = await busy(submit, box, () => login(user.input.value.trim(), pass.input.value));
    if (step && step.mfa_token) secondFactor(root, title, step.mfa_token);
  });
  root.replaceChildren(form);
  user.input.focus();
}

function secondFactor(root, title, mfaToken) {
  const box = messages();
  const code = field("Authentication code", { name: "code", autocomplete: "one-time-code", inputmode: "numeric", required: true, maxlength: 64 },
    "The 6-digit code from your authenticator app, or one of your recovery codes.");
  const submit = h("button", { type: "submit", class: "primary", text: "Verify" });
  const form = h("form", { class: "card narrow", "aria-labelledby": "mfa-title" },
    h("h1", { id: "mfa-title", text: title }),
    h("p", { text: "This account uses two-factor authentication." }),
    code.node, box.node, h("div", { class: "actions" }, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await busy(submit, box, () => loginMfa(mfaToken, code.input.value.replace(/\s+/g, "")));
  });
  root.replaceChildren(form);
  code.input.focus();
}
