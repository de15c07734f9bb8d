// Frontend extension of comfyui-ttsvar: draws the live candidate grid on the search nodes.
// ComfyUI serves this folder under /extensions/comfyui-ttsvar/, two levels below the frontend's scripts/.
//
// The server sends two websocket events (see nodes/previews.py for the grid format):
//   ttsvar.scale       {node, prompt_id, scale, scales, live}       after every generated scale
//   ttsvar.candidates  {node, prompt_id, stage, scale, scales, ...} a grid of candidates with their fate
// The last grid of a node also comes back as its "executed" output (ui.ttsvar_grid), so it stays after a run.
// Everything from the server is inserted with textContent or as attribute values, never as HTML: prompts are
// user text.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const GRID_NODES = new Set(["TTSVAR_Step", "TTSVAR_Cluster", "TTSVAR_Resample", "TTSVAR_PickBest", "TTSVAR_Sampler"]);
const WIDGET_NAME = "ttsvar_candidates";
const CELL = 92;         // px of one thumbnail cell
const EMPTY_HEIGHT = 40; // px of the widget before the first grid: one line of text and the frontend's margins
const WAITING = "candidates appear here while the search runs";
const MAX_COLUMNS = 4;
const STAGE_TITLES = {
  step: "generated",
  cluster: "clustering",
  resample: "reward resampling",
  final: "final pick",
};
const STATUS_LABELS = {
  live: "live",
  kept: "kept",
  dropped: "dropped",
  duplicated: "duplicated",
  picked: "picked",
  finalist: "finalist",
};

const STYLE = `
.ttsvar-panel { font: 11px sans-serif; color: var(--input-text, #ddd); overflow: hidden; box-sizing: border-box;
  padding: 2px 4px; width: 100%; }
.ttsvar-head { font-weight: bold; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.ttsvar-prompt { opacity: 0.75; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.ttsvar-grid { display: grid; gap: 4px; margin-top: 3px; }
.ttsvar-cell { position: relative; border: 2px solid #555; border-radius: 4px; overflow: hidden;
  background: #111; }
.ttsvar-cell img { display: block; width: 100%; aspect-ratio: 1 / 1; object-fit: contain; }
.ttsvar-cell figcaption { position: absolute; left: 0; right: 0; bottom: 0; padding: 1px 3px;
  background: rgba(0, 0, 0, 0.7); color: #eee; font-size: 10px; white-space: nowrap; overflow: hidden; }
.ttsvar-cell.kept { border-color: #3c9d4a; }
.ttsvar-cell.live { border-color: #4a78b5; }
.ttsvar-cell.finalist { border-color: #777; }
.ttsvar-cell.duplicated { border-color: #d6a21e; }
.ttsvar-cell.picked { border-color: #e8e8e8; box-shadow: 0 0 0 2px #3c9d4a inset; }
.ttsvar-cell.dropped { border-color: #7a2e2e; }
.ttsvar-cell.dropped img { opacity: 0.35; filter: grayscale(1); }
`;

function addStyle() {
  if (document.getElementById("ttsvar-style")) return;
  const style = document.createElement("style");
  style.id = "ttsvar-style";
  style.textContent = STYLE;
  document.head.appendChild(style);
}

// Execution ids of nodes inside subgraphs look like "12:5"; walk the path.
function findNode(executionId) {
  if (executionId === null || executionId === undefined) return null;
  let graph = app.graph;
  let node = null;
  for (const part of String(executionId).split(":")) {
    node = graph?.getNodeById(Number(part)) ?? graph?.getNodeById(part) ?? null;
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

function viewUrl(image) {
  const query = new URLSearchParams({
    filename: image.filename,
    subfolder: image.subfolder ?? "",
    type: image.type ?? "temp",
  });
  return api.apiURL(`/view?${query}`);
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

// The grid's widget is created with the node and afterwards only its contents change: the Vue node renderer
// ("Nodes 2.0") takes a node's widget list when the node is added to the graph (and again, frozen, whenever a
// widget is edited), so a widget added later, at the first grid, would never be shown there.
function addPanel(node) {
  const root = element("div", "ttsvar-panel");
  root.append(element("div", "ttsvar-head", WAITING), element("div", "ttsvar-prompt"), element("div", "ttsvar-grid"));
  const widget = node.addDOMWidget(WIDGET_NAME, "ttsvar-grid", root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => widget.ttsvarHeight ?? EMPTY_HEIGHT,
    getMaxHeight: () => widget.ttsvarHeight ?? EMPTY_HEIGHT,
  });
  widget.serialize = false;  // not part of the saved workflow: the grid comes from the server
}

function panelOf(node) {
  return node.widgets.find((w) => w.name === WIDGET_NAME);
}

function resize(node, widget, rows, columns) {
  widget.ttsvarHeight = 44 + rows * (CELL + 10);  // header lines, then rows of cells with borders and gaps
  const width = Math.max(node.size[0], columns * (CELL + 4) + 24);
  const computed = node.computeSize([width, node.size[1]]);
  node.setSize([width, Math.max(node.size[1], computed[1])]);
  node.setDirtyCanvas(true, true);
}

function describe(grid) {
  const counts = {};
  for (const c of grid.candidates) counts[c.status] = (counts[c.status] ?? 0) + 1;
  const parts = Object.entries(counts).map(([status, n]) => `${n} ${STATUS_LABELS[status] ?? status}`);
  const scale = `scale ${grid.scale} of 0-${grid.scales - 1}`;
  return `${STAGE_TITLES[grid.stage] ?? grid.stage} · ${scale} · ${parts.join(", ")}`;
}

// Short enough for a thumbnail; the full wording is in the tooltip.
const SHORT_LABELS = { live: "", kept: "kept", dropped: "drop", picked: "picked", finalist: "" };

function caption(candidate) {
  const label = candidate.status === "duplicated" ? `×${candidate.copies}` : SHORT_LABELS[candidate.status] ?? "";
  const score = typeof candidate.score === "number" ? candidate.score.toFixed(3) : "";
  return [`#${candidate.index}`, label, score].filter(Boolean).join(" ");
}

function tooltip(candidate) {
  let text = `candidate #${candidate.index}: ${STATUS_LABELS[candidate.status] ?? candidate.status}`;
  if (candidate.status === "duplicated") text += ` ×${candidate.copies}`;
  if (typeof candidate.score === "number") text += `, reward ${candidate.score}`;
  return `${text} (from initial candidate #${candidate.origin})`;
}

function showGrid(node, grid) {
  const widget = panelOf(node);
  const [head, prompt, cells] = widget.element.children;
  head.textContent = describe(grid);
  prompt.textContent = (grid.prompts ?? []).join(" | ");
  prompt.title = prompt.textContent;
  const shown = grid.candidates.filter((c) => c.image);
  const columns = Math.max(1, Math.min(MAX_COLUMNS, shown.length));
  cells.style.gridTemplateColumns = `repeat(${columns}, ${CELL}px)`;
  cells.replaceChildren(
    ...shown.map((candidate) => {
      const figure = element("figure", `ttsvar-cell ${candidate.status}`);
      figure.style.margin = "0";
      figure.dataset.status = String(candidate.status);
      figure.dataset.index = String(candidate.index);
      const img = document.createElement("img");
      img.src = viewUrl(candidate.image);
      img.alt = tooltip(candidate);
      img.title = tooltip(candidate);
      figure.append(img, element("figcaption", "", caption(candidate)));
      return figure;
    }),
  );
  if (grid.hidden) cells.append(element("div", "ttsvar-prompt", `+${grid.hidden} more`));
  node.ttsvarGrid = grid;
  resize(node, widget, Math.ceil(shown.length / columns), columns);
}

function showScale(node, detail) {
  const widget = panelOf(node);
  widget.element.children[0].textContent =
    `generating · scale ${detail.scale} of 0-${detail.scales - 1} · ${detail.live} live`;
  node.setDirtyCanvas(true, false);
}

app.registerExtension({
  name: "ttsvar.core",

  setup() {
    addStyle();
    api.addEventListener("ttsvar.candidates", ({ detail }) => {
      const node = findNode(detail?.node);
      if (node && GRID_NODES.has(node.comfyClass ?? node.type)) showGrid(node, detail);
    });
    api.addEventListener("ttsvar.scale", ({ detail }) => {
      const node = findNode(detail?.node);
      if (node && GRID_NODES.has(node.comfyClass ?? node.type)) showScale(node, detail);
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!GRID_NODES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      addPanel(this);
      // the frontend sized the node before this widget existed: make room for its line
      const [width, height] = this.computeSize();
      this.setSize([Math.max(this.size[0], width), Math.max(this.size[1], height)]);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const grid = output?.ttsvar_grid?.[0];
      if (grid) showGrid(this, grid);
    };
  },
});
