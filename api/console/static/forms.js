// Admin pages: forms and buttons with `data-api` call the API; the answer's error is shown in words, success
// refreshes the page's lists in place and is announced.
import { announce, api } from "./console.js";

function body(form) {
  const data = {};
  for (const field of form.elements) {
    if (!field.name || field.disabled) continue;
    if (field.dataset.array !== undefined) {
      data[field.name] = data[field.name] || [];
      if (field.checked) data[field.name].push(field.value);
    } else if (field.type === "checkbox") {
      data[field.name] = field.checked;
    } else if (field.value !== "") {
      data[field.name] = field.dataset.number !== undefined ? Number(field.value) : field.value;
    } else if (field.dataset.emptyNull !== undefined) {
      data[field.name] = null; // an empty field that means "off"
    } // any other empty field is left out: "keep as it is", or the API's default
  }
  return data;
}

async function refreshLists() {
  const response = await fetch(location.href, { credentials: "same-origin" });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const old of document.querySelectorAll("[data-refresh]")) {
    const replacement = fresh.getElementById(old.id);
    if (replacement) old.replaceWith(document.adoptNode(replacement));
  }
  for (const select of document.querySelectorAll("form:not([data-skip-empty]) select")) {
    const replacement = fresh.getElementById(select.id);
    if (replacement) select.innerHTML = replacement.innerHTML;
  }
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.dataset.api) return;
  event.preventDefault();
  const error = form.querySelector(".error");
  error.textContent = "";
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  const result = await api(form.dataset.method, form.dataset.api, body(form));
  button.disabled = false;
  if (!result.ok) {
    error.textContent = `Not saved: ${result.message}`;
    return;
  }
  const show = form.dataset.show;
  if (show) {
    const box = form.parentElement.querySelector("[data-secret]");
    box.querySelector("output").textContent = result.data[show];
    box.hidden = false;
  }
  if (form.dataset.method === "POST") form.reset();
  announce(form.dataset.done || "Saved.");
  await refreshLists();
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-api]");
  if (!button) return;
  const error = document.getElementById("list-error");
  error.textContent = "";
  button.disabled = true;
  const result = await api(button.dataset.method, button.dataset.api);
  button.disabled = false;
  if (!result.ok) {
    error.textContent = `Not done: ${result.message}`;
    return;
  }
  announce(button.dataset.done || "Done.");
  await refreshLists();
  document.getElementById("main").focus();
});
