// The queues and events of the contract's catalogue, as the edge lists them.
import { h } from "./ui.js";

function table(head, rows) {
  return h("table", { class: "plain" },
    h("thead", {}, h("tr", {}, ...head.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, ...rows.map((cells) => h("tr", {}, ...cells.map((c) => h("td", {}, c))))));
}

const code = (text) => (text ? h("code", { text }) : "—");

async function show() {
  const response = await fetch("/api/v1/docs/messaging.json", { credentials: "omit" });
  const doc = await response.json();
  document.getElementById("exchange").textContent = doc.exchange;
  document.getElementById("common").textContent = `Any queue may also answer ${doc.every_queue_errors.join(", ")}; one that honours Idempotency-Key also ${doc.idempotency_errors.join(", ")}.`;
  document.getElementById("queues").replaceChildren(table(
    ["Queue", "Caller", "Request", "Reply", "Idempotency-Key", "Its error replies"],
    doc.queues.map((q) => [code(q.queue), q.caller, code(q.request), q.reply ? code(q.reply) : "null",
      q.idempotent ? "honoured" : "—", h("ul", {}, ...q.errors.map((e) => h("li", { text: e })))])));
  document.getElementById("events").replaceChildren(table(
    ["Type (routing key)", "data", "Fields of data"],
    doc.events.map((e) => [code(e.type), code(e.data), e.fields.join(", ")])));
}

show().catch(() => {
  document.getElementById("queues").replaceChildren(h("p", { class: "error", role: "alert", text: "The list could not be loaded." }));
});
