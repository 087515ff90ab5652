/**
 * Charts: vega-lite specs compiled to vega and rendered by vega's headless SVG renderer — no
 * browser, no canvas, no hand-written SVG.
 */
import { View, parse } from 'vega';
import { compile } from 'vega-lite';
import type { ResultChart } from '../experiment.js';

/** Renders a chart to an SVG document. */
export async function renderChartSvg(chart: ResultChart): Promise<string> {
  const spec = { title: chart.title, ...chart.spec } as typeof chart.spec;
  const { spec: vegaSpec } = compile(spec);
  const view = new View(parse(vegaSpec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
