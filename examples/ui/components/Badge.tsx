/** @jsx h */
// A tiny component compiled by esbuild for the preview; `h` builds DOM nodes,
// so no framework needs to be installed.
type Props = Record<string, string> | null;

function h(tag: string, props: Props, ...children: (string | Node)[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) el.setAttribute(key, value);
  for (const child of children) el.append(child);
  return el;
}

function Badge(label: string, count: number): HTMLElement {
  return (
    <span style="display:inline-flex;gap:8px;align-items:center;padding:10px 16px;border-radius:999px;background:#0f766e;color:#fff;font:600 18px system-ui,sans-serif">
      {label}
      <b style="background:#fff;color:#0f766e;border-radius:999px;padding:2px 10px">{String(count)}</b>
    </span>
  );
}

document.getElementById("root")!.append(
  <div style="padding:40px;display:flex;gap:16px">{Badge("Reviews", 42)}{Badge("Deploys", 7)}</div>
);
