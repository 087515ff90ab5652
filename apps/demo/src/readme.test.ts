// The README's examples are real: its scenario file validates step by step, and its library
// snippet runs.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bootExperiment, experiments, silentIo } from './index.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const block = (lang: string): string => {
  const m = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(readme);
  if (m?.[1] === undefined) throw new Error(`no ${lang} block in the README`);
  return m[1];
};

describe('README', () => {
  it("the scenario file's steps are valid parameters of their experiments", () => {
    const scenario = JSON.parse(block('json')) as { steps: Array<{ experiment: string; params: unknown }> };
    for (const s of scenario.steps) {
      const e = experiments.find((x) => x.name === s.experiment);
      expect(e, s.experiment).toBeDefined();
      expect(e?.schema.safeParse(s.params).success).toBe(true);
    }
  });

  it('the library example runs', async () => {
    expect(block('ts')).toContain("bootExperiment.schema.parse({ type: 'sw-protected', size: '256MiB', transfers: 500 })");
    const params = bootExperiment.schema.parse({ type: 'sw-protected', size: '256MiB', transfers: 500 });
    const result = await bootExperiment.run(params, silentIo);
    expect(result.tables[0]?.rows.length).toBe(6);
  });
});
