// The account page: profile, password, sessions, two-factor authentication (TOTP).

import { api, describe, forget, logout, onSignedInChange, signedIn } from "./api.js";
import { busy, field, h, loading, messages, signInView, time } from "./ui.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const adminLink = document.getElementById("admin-link");

async function show() {
  if (!signedIn()) {
    nav.hidden = true;
    who.replaceChildren();
    signInView(main, "Sign in to your account");
    return;
  }
  main.replaceChildren(loading());
  let me;
  try {
    me = await api.get("/users/me");
  } catch (error) {
    if (!signedIn()) return; // the session is gone: the sign-in form is already shown
    const box = messages();
    box.error(error);
    main.replaceChildren(box.node);
    return;
  }
  nav.hidden = false;
  adminLink.hidden = !me.is_superuser;
  const out = h("button", { type: "button", class: "link", text: "Sign out" });
  out.addEventListener("click", () => logout().catch(() => {}));
  who.replaceChildren(h("span", { class: "muted", text: me.username }), " ", out);
  main.replaceChildren(h("h1", { text: `Hello, ${me.full_name || me.username}` }),
    h("div", { class: "grid" }, profile(me), password(), sessions(), mfa()));
}

function profile(me) {
  const box = messages();
  const email = field("Email", { type: "email", name: "email", value: me.email, autocomplete: "email", required: true },
    "is_verified" in me ? (me.is_verified ? "Verified." : "Not verified yet: check your mail.") : null);
  const username = field("Username", { name: "username", value: me.username, autocomplete: "username", required: true, minlength: 3, maxlength: 32 },
    "3–32 letters, digits, dots, dashes or underscores.");
  const fullName = field("Full name", { name: "full_name", value: me.full_name || "", autocomplete: "name", maxlength: 200 });
  const save = h("button", { type: "submit", class: "primary", text: "Save profile" });
  const form = h("form", { class: "card", id: "profile", "aria-labelledby": "profile-title" },
    h("h2", { id: "profile-title", text: "Profile" }), email.node, username.node, fullName.node, box.node,
    h("div", { class: "actions" }, save));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = {};
    if (email.input.value.trim() !== me.email) body.email = email.input.value.trim();
    if (username.input.value.trim() !== me.username) body.username = username.input.value.trim();
    const name = fullName.input.value.trim() || null;
    if (name !== me.full_name) body.full_name = name;
    if (!Object.keys(body).length) { box.notice("Nothing to save."); return; }
    busy(save, box, async () => {
      Object.assign(me, await api.patch("/users/me", body));
      who.firstChild.textContent = me.username;
      box.notice("Profile saved.");
    });
  });
  return form;
}

function password() {
  const box = messages();
  // A hidden username field lets password managers file the new password under the account.
  const current = field("Current password", { name: "current_password", type: "password", autocomplete: "current-password", required: true });
  const next = field("New password", { name: "new_password", type: "password", autocomplete: "new-password", required: true, minlength: 8 },
    "At least 8 characters, at most 72 bytes.");
  const again = field("New password, again", { name: "new_password_again", type: "password", autocomplete: "new-password", required: true });
  const save = h("button", { type: "submit", class: "primary", text: "Change password" });
  const form = h("form", { class: "card", id: "password", "aria-labelledby": "password-title" },
    h("h2", { id: "password-title", text: "Password" }), current.node, next.node, again.node, box.node,
    h("div", { class: "actions" }, save));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (next.input.value !== again.input.value) { box.error("The new passwords differ."); again.input.focus(); return; }
    busy(save, box, async () => {
      await api.post("/users/me/password", { current_password: current.input.value, new_password: next.input.value });
      form.reset();
      box.notice("Password changed. Your other sessions have been signed out.");
    });
  });
  return form;
}

function sessions() {
  const box = messages();
  const list = h("ul", { class: "sessions", "aria-live": "polite" }, h("li", {}, loading()));
  const others = h("button", { type: "button", text: "Sign out all other sessions" });
  const section = h("section", { class: "card", id: "sessions", "aria-labelledby": "sessions-title" },
    h("h2", { id: "sessions-title", text: "Sessions" }), box.node, list, h("div", { class: "actions" }, others));
  async function load() {
    try {
      const page = await api.get("/users/me/sessions");
      list.replaceChildren(...page.items.map(item));
      if (!page.items.length) list.replaceChildren(h("li", { class: "muted", text: "No sessions." }));
    } catch (error) {
      list.replaceChildren();
      others.disabled = error.code === "not_found";
      box.error(error.code === "not_found" ? "This Warden does not list sessions (its API has no /users/me/sessions)." : error);
    }
  }
  function item(session) {
    const device = session.user_agent || "Unknown device";
    // Each button names its session: beside the header's "Sign out", a list of bare "Sign out"
    // buttons would all read the same to a screen reader.
    const end = h("button", {
      type: "button", class: "small", text: session.current ? "Sign out (this browser)" : "Sign out",
      "aria-label": session.current ? null : `Sign out ${device}, signed in ${time(session.created_at)}`,
    });
    end.addEventListener("click", () => busy(end, box, async () => {
      await api.del(`/users/me/sessions/${encodeURIComponent(session.id)}`);
      if (session.current) { forget(); return; }
      box.notice("That session has been signed out.");
      await load();
    }));
    return h("li", { class: session.current ? "current" : "" },
      h("div", {},
        h("strong", { text: device }),
        session.current ? h("span", { class: "badge ok", text: "this browser" }) : null),
      h("div", { class: "muted", text: `${session.ip || "unknown address"} · signed in ${time(session.created_at)} · last used ${time(session.last_used_at)}` }),
      end);
  }
  others.addEventListener("click", () => busy(others, box, async () => {
    await api.del("/users/me/sessions");
    box.notice("Every other session has been signed out.");
    await load();
  }));
  load();
  return section;
}

function mfa() {
  const box = messages();
  const body = h("div");
  const start = h("button", { type: "button", class: "primary", text: "Set up an authenticator app" });
  const section = h("section", { class: "card", id: "mfa", "aria-labelledby": "mfa-title" },
    h("h2", { id: "mfa-title", text: "Two-factor authentication" }),
    h("p", { class: "hint", text: "After your password, sign-in asks for a 6-digit code from an app such as FreeOTP, Aegis or Google Authenticator." }),
    box.node, body, h("div", { class: "actions" }, start), disable(box));
  start.addEventListener("click", () => busy(start, box, async () => {
    const enrolment = await api.post("/users/me/mfa/totp", {});
    start.hidden = true;
    body.replaceChildren(await enrolView(enrolment, box, () => { start.hidden = false; }));
  }));
  return section;
}

// Draws the otpauth URI as a QR code: the edge renders it (segno) from a POST body, so the
// secret never sits in a URL; the SVG is parsed as XML and adopted, never run as HTML.
async function qr(uri) {
  const response = await fetch("/account/qr", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ uri }),
    credentials: "omit", cache: "no-store",
  });
  if (!response.ok) throw new Error("The QR code could not be drawn.");
  const svg = new DOMParser().parseFromString(await response.text(), "image/svg+xml").documentElement;
  if (svg.nodeName !== "svg") throw new Error("The QR code could not be drawn.");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "QR code for your authenticator app");
  return document.importNode(svg, true);
}

async function enrolView(enrolment, box, reset) {
  let picture;
  try {
    picture = await qr(enrolment.otpauth_uri);
  } catch {
    picture = h("p", { class: "hint", text: "The QR code could not be drawn: enter the key by hand." });
  }
  const code = field("Code from the app", { name: "totp_code", autocomplete: "one-time-code", inputmode: "numeric", pattern: "[0-9 ]{6,7}", maxlength: 7, required: true });
  const confirm = h("button", { type: "submit", class: "primary", text: "Turn on" });
  const cancel = h("button", { type: "button", text: "Cancel" });
  const form = h("form", { class: "enrol" },
    h("ol", {},
      h("li", {}, "Scan this code with your authenticator app:", h("div", { class: "qr" }, picture)),
      h("li", {}, "Or enter this key: ", h("code", { class: "secret", "data-secret": "", text: enrolment.secret })),
      h("li", { text: "Type the 6-digit code it shows:" })),
    code.node, h("div", { class: "actions" }, confirm, cancel));
  cancel.addEventListener("click", () => { form.replaceWith(); reset(); box.clear(); });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(confirm, box, async () => {
      const done = await api.post("/users/me/mfa/totp/confirm", { code: code.input.value.replace(/\s+/g, "") });
      form.replaceWith(recoveryView(done.recovery_codes, reset));
      box.notice("Two-factor authentication is on.");
    });
  });
  return form;
}

function recoveryView(codes, reset) {
  const saved = h("button", { type: "button", class: "primary", text: "I have saved them" });
  const view = h("div", { class: "recovery" },
    h("h3", { text: "Recovery codes" }),
    h("p", { text: "Each works once, instead of a code from the app. Save them now: they are not shown again." }),
    h("ol", { class: "codes" }, ...codes.map((c) => h("li", {}, h("code", { text: c })))),
    h("div", { class: "actions" }, saved));
  saved.addEventListener("click", () => { view.replaceWith(); reset(); });
  return view;
}

function disable(box) {
  const password = field("Your password, to confirm", { name: "mfa_password", type: "password", autocomplete: "current-password", required: true });
  const off = h("button", { type: "submit", class: "danger", text: "Turn off two-factor" });
  const form = h("details", { class: "mfa-off" },
    h("summary", { text: "Turn off two-factor authentication" }),
    h("form", {}, password.node, h("div", { class: "actions" }, off)));
  form.querySelector("form").addEventListener("submit", (event) => {
    event.preventDefault();
    busy(off, box, async () => {
      await api.del("/users/me/mfa/totp", { password: password.input.value });
      password.input.value = "";
      box.notice("Two-factor authentication is off.");
    });
  });
  return form;
}

onSignedInChange(() => show());
show().catch((error) => {
  main.replaceChildren(h("p", { class: "error", role: "alert", text: describe(error) }));
});
