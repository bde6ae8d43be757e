// The chapters' widgets in the rendered book (qhd_lib.sphinx_explorers): every view was
// rendered when the book was built; these selectors switch between them. No network, no kernel.
"use strict";

function qhdExplorer(root) {
  const data = JSON.parse(root.querySelector("script.qhd-explorer-data").textContent);
  const form = root.querySelector(".qhd-explorer-controls");
  const output = root.querySelector(".qhd-explorer-view");
  const state = data.default.slice();
  const views = new Map(data.views.map((view) => [view.at.join(","), view]));

  // The values of control c that some view has, with the controls before c as they are now.
  const available = (c) =>
    data.controls[c].labels
      .map((_, i) => i)
      .filter((i) =>
        data.views.some((v) => v.at[c] === i && v.at.slice(0, c).every((x, j) => x === state[j])),
      );

  // After control c changed, keep each later control's value if it is still there, else take
  // the nearest one that is.
  const settle = (c) => {
    for (let d = c + 1; d < state.length; d++) {
      const values = available(d);
      if (!values.includes(state[d])) {
        state[d] = values.reduce((a, b) => (Math.abs(b - state[d]) < Math.abs(a - state[d]) ? b : a));
      }
    }
  };

  const inputs = data.controls.map((control, c) => {
    const label = document.createElement("label");
    label.append(control.name + " ");
    const input = document.createElement(control.kind === "select" ? "select" : "input");
    input.dataset.control = control.name;
    if (control.kind === "range") input.type = "range";
    if (control.kind === "checkbox") input.type = "checkbox";
    const shown = document.createElement("output"); // a range's value; a select shows its own
    label.append(input, " ", shown);
    form.append(label);
    input.addEventListener(control.kind === "range" ? "input" : "change", () => {
      const values = available(c);
      if (control.kind === "checkbox") state[c] = input.checked ? 1 : 0;
      else if (control.kind === "range") state[c] = values[Number(input.value)];
      else state[c] = Number(input.value);
      settle(c);
      update();
    });
    return { input, shown };
  });

  const update = () => {
    data.controls.forEach((control, c) => {
      const { input, shown } = inputs[c];
      const values = available(c);
      shown.textContent = control.kind === "range" ? control.labels[state[c]] : "";
      if (control.kind === "checkbox") {
        input.checked = state[c] === 1;
        input.disabled = values.length < 2;
      } else if (control.kind === "range") {
        input.min = 0;
        input.max = values.length - 1;
        input.value = values.indexOf(state[c]);
      } else {
        input.replaceChildren(...values.map((i) => new Option(control.labels[i], i)));
        input.value = state[c];
      }
    });
    const view = views.get(state.join(","));
    output.replaceChildren(
      ...view.images.map((src) => Object.assign(new Image(), { src, alt: view.alt })),
    );
    if (view.text !== null) {
      const pre = document.createElement("pre");
      pre.textContent = view.text;
      output.append(pre);
    }
  };

  update();
}

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", () =>
    document.querySelectorAll(".qhd-explorer").forEach(qhdExplorer),
  );
} else {
  document.querySelectorAll(".qhd-explorer").forEach(qhdExplorer);
}
