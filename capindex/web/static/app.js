// capindex serve: the page's behaviour. Every text from the server is set with
// textContent (never innerHTML), so captions and file names stay text.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function fileName(path) {
  return path.split("/").pop();
}

// One result card, as templates/_cards.html draws it.
function card(hit) {
  const item = document.createElement("li");
  item.className = "card";
  const link = document.createElement("a");
  link.href = hit.url;
  const img = document.createElement("img");
  img.src = hit.thumbnail;
  img.alt = hit.caption || "";
  img.loading = "lazy";
  const caption = document.createElement("span");
  caption.className = "caption";
  caption.textContent = hit.caption || "";
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = fileName(hit.path);
  link.append(img, caption, name);
  item.append(link);
  return item;
}

// Infinite scroll: the next page of /api/search is appended when the end comes into view.
// The "More results" link stays the way without JavaScript.
function infiniteScroll() {
  const grid = document.getElementById("results");
  const more = document.getElementById("more");
  if (!grid || !more || !("IntersectionObserver" in window)) return;
  let loading = false;
  const observer = new IntersectionObserver(async (entries) => {
    if (!entries.some((e) => e.isIntersecting) || loading || !grid.dataset.next) return;
    loading = true;
    try {
      const response = await fetch(grid.dataset.next, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error((await response.json()).error || response.statusText);
      const page = await response.json();
      page.results.forEach((hit) => grid.append(card(hit)));
      const shown = document.getElementById("shown");
      if (shown) shown.textContent = String(page.offset + page.results.length);
      grid.dataset.next = page.next || "";
      if (page.next) {
        const url = new URL(more.href);
        url.searchParams.set("offset", String(page.offset + page.results.length));
        more.href = url.pathname + url.search;
        observer.unobserve(more);  // observing again reports it at once if still in view
        observer.observe(more);
      } else {
        observer.disconnect();
        more.remove();
      }
    } catch (err) {
      observer.disconnect();  // the link still works
    } finally {
      loading = false;
    }
  }, { rootMargin: "400px" });
  observer.observe(more);
}

// Keys: "/" goes to the search box, "e" to the caption editor, arrows move between cards.
function keyboard() {
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, textarea, select");
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (!typing && event.key === "/") {
      const box = document.getElementById("q");
      if (box) { event.preventDefault(); box.focus(); box.select(); }
    } else if (!typing && event.key === "e") {
      const editor = document.getElementById("caption-text");
      if (editor) { event.preventDefault(); editor.focus(); }
    } else if (!typing && (event.key === "ArrowRight" || event.key === "ArrowLeft")) {
      const cards = Array.from(document.querySelectorAll(".card a"));
      const at = cards.indexOf(document.activeElement);
      if (at < 0) return;
      const next = cards[at + (event.key === "ArrowRight" ? 1 : -1)];
      if (next) { event.preventDefault(); next.focus(); }
    }
  });
}

const SVG = "http://www.w3.org/2000/svg";

// The detector's boxes over the preview, as the photo page draws them.
function drawBoxes(figure, described) {
  figure.querySelectorAll("svg").forEach((old) => old.remove());
  if (!described.objects || !described.objects.length || !described.width) return;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "boxes");
  svg.setAttribute("viewBox", `0 0 ${described.width} ${described.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const font = Math.max(described.width, described.height) / 40;
  described.objects.forEach((object) => {
    const [x0, y0, x1, y1] = object.box;
    const group = document.createElementNS(SVG, "g");
    group.setAttribute("class", "box");
    const rect = document.createElementNS(SVG, "rect");
    Object.entries({ x: x0, y: y0, width: x1 - x0, height: y1 - y0 })
      .forEach(([k, v]) => rect.setAttribute(k, String(v)));
    rect.setAttribute("vector-effect", "non-scaling-stroke");
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", String(x0 + font / 4));
    label.setAttribute("y", String(y0 + font));
    label.setAttribute("font-size", String(font));
    label.textContent = object.label;
    group.append(rect, label);
    svg.append(group);
  });
  figure.append(svg);
}

// Caption an upload: the file's bytes go to POST /api/caption; nothing is stored.
function upload() {
  const input = document.getElementById("upload");
  const drop = document.getElementById("drop");
  if (!input || !drop) return;
  const status = document.getElementById("upload-status");
  const problem = document.getElementById("upload-error");
  const result = document.getElementById("upload-result");
  const preview = document.getElementById("upload-preview");
  let previewUrl = null;

  async function send(file) {
    if (!file) return;
    problem.hidden = true;
    result.hidden = true;
    status.textContent = `Captioning ${file.name}…`;
    try {
      const response = await fetch("/api/caption", {
        method: "POST",
        headers: { "Content-Type": file.type || "application/octet-stream", "X-CSRF-Token": csrfToken() },
        body: file,
      });
      const described = await response.json();
      if (!response.ok) throw new Error(described.error || response.statusText);
      if (previewUrl) URL.revokeObjectURL(previewUrl);
      previewUrl = URL.createObjectURL(file);
      preview.src = previewUrl;
      document.getElementById("upload-caption").textContent = described.caption;
      const alt = document.getElementById("upload-alt");
      alt.replaceChildren(...(described.alt_captions || []).map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        return item;
      }));
      document.getElementById("upload-tags").textContent =
        (described.tags || []).map((t) => `${t.label} ${Math.round(100 * t.prob)}%`).join(", ") || "none";
      document.getElementById("upload-objects").textContent =
        (described.objects || []).map((o) => o.label).join(", ") || "none";
      drawBoxes(document.getElementById("upload-figure"), described);
      result.hidden = false;
      status.textContent = `${file.name}: captioned`;
    } catch (err) {
      status.textContent = "";
      problem.textContent = `${file.name}: ${err.message}`;
      problem.hidden = false;
    }
  }

  input.addEventListener("change", () => send(input.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    send(event.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  infiniteScroll();
  keyboard();
  upload();
});
