// The agent's home: the held case and the team's cases follow the event stream; Resolve and availability
// go through the API.
import { AGENT_EVENTS, CASE_EVENTS, announce, api, debounce, listen } from "./console.js";

const casePart = document.getElementById("case-part");
const teamPart = document.getElementById("team-part");
const buttons = document.querySelector("[data-agent]");
const agentId = buttons.dataset.agent;
const baseTitle = "Returns desk";
let refreshing = Promise.resolve();

async function refresh() {
  const response = await fetch("/console/agent/parts", { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401 || response.redirected) {
    location.assign("/login");
    return;
  }
  if (!response.ok) return;
  const parts = await response.json();
  teamPart.innerHTML = parts.team_html;
  showStatus(parts.status);
  const held = parts.case_id || "";
  if (parts.case_state !== casePart.dataset.state) {
    const sameCase = held === casePart.dataset.case;
    const missed = !held && casePart.dataset.state.endsWith(":offer") && parts.status === "away";
    casePart.dataset.case = held;
    casePart.dataset.state = parts.case_state;
    casePart.innerHTML = parts.case_html;
    startCountdown();
    if (missed) announce("The offer expired before you accepted it: you are now away. Press Available to get cases again.");
    else if (!sameCase) announce(parts.announce);
    const what = parts.offer ? "New offer" : "New case";
    document.title = held ? `${what} · ${baseTitle}` : `No case · ${baseTitle}`;
  }
  const overdue = document.getElementById("overdue-mark");
  if (overdue && overdue.hidden === parts.overdue) {
    overdue.hidden = !parts.overdue;
    if (parts.overdue) announce("Your case is overdue.");
  }
}

// The offer's time left, counted down each second (not announced: the offer itself was).
let countdown = null;
function startCountdown() {
  clearInterval(countdown);
  const left = document.getElementById("offer-left");
  if (!left) return;
  const until = Date.now() + Number(left.dataset.left) * 1000;
  countdown = setInterval(() => {
    const seconds = Math.max(Math.round((until - Date.now()) / 1000), 0);
    left.textContent = seconds < 60 ? `${seconds} s` : `${Math.floor(seconds / 60)} min`;
    if (seconds === 0) clearInterval(countdown);
  }, 1000);
}
startCountdown();

function queueRefresh() {
  refreshing = refreshing.then(refresh, refresh);
  return refreshing;
}

function showStatus(status) {
  for (const button of buttons.querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(button.dataset.status === status));
  }
  const now = document.getElementById("availability-now");
  now.textContent = status === "available" ? "You are available and get the next case of your team." : "You are away: no new case comes to you.";
}

buttons.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-status]");
  if (!button) return;
  const error = document.getElementById("availability-error");
  error.textContent = "";
  const result = await api("PATCH", `/api/v1/agents/${agentId}`, { status: button.dataset.status });
  if (!result.ok) {
    error.textContent = `Could not change your availability: ${result.message}`;
    return;
  }
  showStatus(result.data.status);
  await queueRefresh();
});

casePart.addEventListener("click", async (event) => {
  const button = event.target.closest("#offer-buttons button[data-reply]");
  if (!button) return;
  const reply = button.dataset.reply;
  const error = document.getElementById("offer-error");
  error.textContent = "";
  for (const b of button.parentElement.querySelectorAll("button")) b.disabled = true;
  const result = await api("POST", `/api/v1/cases/${button.parentElement.dataset.case}/${reply}`, {});
  if (!result.ok) {
    for (const b of button.parentElement.querySelectorAll("button")) b.disabled = false;
    error.textContent = `Could not ${reply}: ${result.message}`;
    return;
  }
  await queueRefresh(); // then the announcement, which the refresh would otherwise replace
  announce(reply === "accept" ? "Offer accepted: the case is yours." : "Offer declined: it goes to the next agent.");
  document.getElementById("your-case-h").focus();
});

casePart.addEventListener("submit", async (event) => {
  const transfer = event.target.closest("#transfer-form");
  if (transfer) {
    event.preventDefault();
    const error = transfer.querySelector("#transfer-error");
    const button = transfer.querySelector("button");
    error.textContent = "";
    button.disabled = true;
    const team = transfer.querySelector("#transfer-team").value;
    const note = transfer.querySelector("#transfer-note").value.trim();
    const result = await api("POST", `/api/v1/cases/${transfer.dataset.case}/transfer`, note ? { team, note } : { team });
    button.disabled = false;
    if (!result.ok) {
      error.textContent = `Could not transfer: ${result.message}`;
      return;
    }
    await queueRefresh();
    announce(`Case transferred to team ${team}.`);
    document.getElementById("your-case-h").focus();
    return;
  }
  const form = event.target.closest("#resolve-form");
  if (!form) return;
  event.preventDefault();
  const error = form.querySelector("#resolve-error");
  const button = form.querySelector("button");
  error.textContent = "";
  button.disabled = true;
  const resolution = form.querySelector("#resolution").value.trim();
  const result = await api("POST", `/api/v1/cases/${form.dataset.case}/resolve`, resolution ? { resolution } : {});
  button.disabled = false;
  if (!result.ok) {
    error.textContent = `Could not resolve: ${result.message}`;
    return;
  }
  announce("Case resolved.");
  await queueRefresh();
  document.getElementById("your-case-h").focus();
});

listen("/api/v1/events", [...CASE_EVENTS, ...AGENT_EVENTS], debounce(queueRefresh, 50), queueRefresh);
