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

const GRID_NODES = new Set(["TTSVAR_Step", "TTSVAR_Cluster", "TTSVAR_Resample", "TTSVAR_PickBest", "TTSVAR_Sampler",
  "TTSVAR_Keep", "TTSVAR_Vary", "TTSVAR_StartFromImage", "TTSVAR_ScoreImages"]);
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
  keep: "kept by hand",
  vary: "vary from scale",
  image: "from image",
  score: "scored",
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
  const scale = grid.scale === null || grid.scale === undefined ? [] : [`scale ${grid.scale} of 0-${grid.scales - 1}`];
  const note = grid.note ? [grid.note] : [];
  return [STAGE_TITLES[grid.stage] ?? grid.stage, ...scale, parts.join(", "), ...note].join(" · ");
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
  enablePicking(node, widget);
}

function showScale(node, detail) {
  const widget = panelOf(node);
  widget.element.children[0].textContent =
    `generating · scale ${detail.scale} of 0-${detail.scales - 1} · ${detail.live} live`;
  node.setDirtyCanvas(true, false);
}

// ---- picking by clicking a grid ------------------------------------------------------------------------
// A grid numbers its cells as the candidates it shows, and the stage says whose they are (nodes/previews.py).
// "step", "final" and "image" grids show the node's output: a click edits the keep list of the nearest Keep
// Candidates node after it, reached through Step nodes only (they keep the numbering). A Keep node's own
// grid shows its input, so a click there edits its own list; a Vary node's grid shows its input, so a click
// there chooses the candidate to vary. A click toggles a candidate; shift-click adds one more copy.
const KEEP_NODE = "TTSVAR_Keep";
const VARY_NODE = "TTSVAR_Vary";
const STEP_NODE = "TTSVAR_Step";
const STATE_TYPE = "TTSVAR_STATE";
const OUTPUT_STAGES = new Set(["step", "final", "image"]);
const PICK_STYLE = `
.ttsvar-pickable .ttsvar-cell { cursor: pointer; }
.ttsvar-cell.chosen { outline: 2px solid #e8c547; outline-offset: -5px; }
.ttsvar-cell .ttsvar-chosen { position: absolute; top: 2px; right: 2px; padding: 0 3px; border-radius: 3px;
  background: #e8c547; color: #111; font-size: 10px; font-weight: bold; }
`;

function classOf(node) {
  return node.comfyClass ?? node.type;
}

// Breadth first, so the nearest Keep node wins; among equally near ones, the first link.
function keepNodeAfter(node) {
  const seen = new Set([node.id]);
  let frontier = [node];
  while (frontier.length) {
    const next = [];
    for (const current of frontier) {
      for (const [slot, output] of (current.outputs ?? []).entries()) {
        if (output.type !== STATE_TYPE) continue;
        for (const target of current.getOutputNodes(slot) ?? []) {
          if (seen.has(target.id)) continue;
          seen.add(target.id);
          if (classOf(target) === KEEP_NODE) return target;
          if (classOf(target) === STEP_NODE) next.push(target);
        }
      }
    }
    frontier = next;
  }
  return null;
}

// The widget a click on this node's grid edits, or null when the grid is not for picking.
function pickTarget(node, grid) {
  const type = classOf(node);
  let target = null;
  let name = "keep";
  if (grid?.stage === "keep" && type === KEEP_NODE) target = node;
  else if (grid?.stage === "vary" && type === VARY_NODE) [target, name] = [node, "candidate"];
  else if (OUTPUT_STAGES.has(grid?.stage)) target = keepNodeAfter(node);
  return target?.widgets?.find((w) => w.name === name) ?? null;
}

// "0,3,5x2" -> Map {0 => 1, 3 => 1, 5 => 2}; null when the text is not a keep list (nodes/options.py parse_keep).
function parseKeep(text) {
  const counts = new Map();
  for (const part of String(text ?? "").replace(/\s/g, "").replace(/×/g, "x").toLowerCase().split(",")) {
    if (!part) continue;
    const match = /^(\d+)(?:x(\d+))?$/.exec(part);
    if (!match) return null;
    const index = Number(match[1]);
    counts.set(index, (counts.get(index) ?? 0) + Number(match[2] ?? 1));
  }
  return counts;
}

function formatKeep(counts) {
  return [...counts.entries()]
    .filter(([, copies]) => copies > 0)
    .sort((a, b) => a[0] - b[0])
    .map(([index, copies]) => (copies === 1 ? `${index}` : `${index}x${copies}`))
    .join(",");
}

function chosenCounts(widget) {
  if (!widget) return new Map();
  if (widget.name === "candidate") return new Map([[Number(widget.value), 1]]);
  return parseKeep(widget.value) ?? new Map();
}

// Marks, on every grid, the candidates its target widget names now (they change before the next run does).
function markChoices() {
  for (const node of app.graph?.nodes ?? []) {
    const panel = node.widgets?.find((w) => w.name === WIDGET_NAME)?.element;
    if (!panel || !node.ttsvarGrid) continue;
    const target = pickTarget(node, node.ttsvarGrid);
    const chosen = chosenCounts(target);
    panel.classList.toggle("ttsvar-pickable", Boolean(target));
    for (const figure of panel.querySelectorAll("figure.ttsvar-cell")) {
      const copies = chosen.get(Number(figure.dataset.index)) ?? 0;
      figure.dataset.chosen = String(copies);
      figure.classList.toggle("chosen", copies > 0);
      figure.querySelector(".ttsvar-chosen")?.remove();
      if (copies > 0) figure.append(element("span", "ttsvar-chosen", copies > 1 ? `✓×${copies}` : "✓"));
    }
  }
}

function pick(node, index, addCopy) {
  const widget = pickTarget(node, node.ttsvarGrid);
  if (!widget) return;
  let value = index;
  if (widget.name === "keep") {
    const counts = parseKeep(widget.value) ?? new Map();  // text that is no keep list is replaced
    if (addCopy) counts.set(index, (counts.get(index) ?? 0) + 1);
    else if (counts.has(index)) counts.delete(index);
    else counts.set(index, 1);
    value = formatKeep(counts);
  }
  widget.value = value;
  widget.callback?.(value);
  markChoices();
  app.graph.setDirtyCanvas(true, true);
}

function enablePicking(node, widget) {
  const panel = widget.element;
  panel.dataset.ttsvarNode = String(node.id);
  if (!panel.ttsvarPicking) {
    panel.ttsvarPicking = true;
    panel.addEventListener("click", (event) => {
      const figure = event.target.closest?.("figure.ttsvar-cell");
      if (figure) pick(node, Number(figure.dataset.index), event.shiftKey);
    });
    if (!document.getElementById("ttsvar-pick-style")) {
      const style = element("style", "", PICK_STYLE);
      style.id = "ttsvar-pick-style";
      document.head.appendChild(style);
    }
  }
  markChoices();
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

  // a keep list or candidate number typed in by hand shows on the grids at once
  nodeCreated(node) {
    if (classOf(node) !== KEEP_NODE && classOf(node) !== VARY_NODE) return;
    for (const widget of node.widgets ?? []) {
      if (widget.name !== "keep" && widget.name !== "candidate") continue;
      const callback = widget.callback;
      widget.callback = function (...args) {
        const result = callback?.apply(this, args);
        markChoices();
        return result;
      };
    }
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
