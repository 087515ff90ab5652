/**
 * The HTML report: the markdown summary rendered by marked, with each chart's SVG inlined, so one
 * self-contained file opens in any browser and can be attached to a mailing-list reply or an issue.
 */
import { Marked } from 'marked';

const STYLE = `
body { font: 15px/1.5 system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #1b1f24; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; }
th { background: #f6f8fa; }
code, pre { background: #f6f8fa; border-radius: 4px; padding: .1rem .3rem; }
figure { margin: 1.5rem 0; }
`;

const escape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * Renders `markdown` to a standalone HTML page. Images whose source is a key of `svgs` (the chart
 * files) are replaced by the SVG itself.
 */
export function renderHtmlReport(title: string, markdown: string, svgs: ReadonlyMap<string, string>): string {
  const marked = new Marked({ gfm: true, async: false });
  marked.use({
    renderer: {
      image({ href, text }) {
        const svg = svgs.get(href);
        if (svg === undefined) return `<img src="${escape(href)}" alt="${escape(text)}">`;
        // The SVG document's XML prolog, if any, is not allowed inside HTML.
        return `<figure role="img" aria-label="${escape(text)}">${svg.replace(/^<\?xml[^>]*>\s*/, '')}</figure>`;
      },
    },
  });
  const body = marked.parse(markdown) as string;
  return `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title><style>${STYLE}</style></head>\n<body>\n${body}</body></html>\n`;
}
