// Screenshots of the built docs site in headless Chromium, with what a reader would notice:
// pages that fail to load a script, and equations MathJax could not typeset.
//
//   NO_MKDOCS_2_WARNING=1 mkdocs build --strict
//   (cd site && python -m http.server 8765 &)
//   cd tools/site_check && npm install && node shots.mjs http://localhost:8765/ OUT_DIR "" quickstart/ training/
//
// Chromium comes from the npm package @sparticuz/chromium (a headless build inside the package,
// so no browser download from a CDN is needed). Prints one JSON line per page; exits 1 if any
// page had a failed request, a script error or a MathJax error.
import chromium from "@sparticuz/chromium";
import puppeteer from "puppeteer-core";

const [, , base, outdir, ...pages] = process.argv;
const browser = await puppeteer.launch({
  args: chromium.args,
  executablePath: await chromium.executablePath(),
  headless: true,
});
let failed = false;
for (const path of pages) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("requestfailed", (r) => errors.push("failed " + r.url()));
  await page.goto(base + path, { waitUntil: "networkidle0" });
  await new Promise((resolve) => setTimeout(resolve, 1500)); // MathJax typesets after load
  const math = await page.evaluate(() => ({
    equations: document.querySelectorAll(".arithmatex").length,
    typeset: document.querySelectorAll("mjx-container svg").length,
    errors: document.querySelectorAll("mjx-merror, [data-mjx-error]").length,
  }));
  const name = path.replace(/\/$/, "").replace(/\//g, "_") || "index";
  await page.screenshot({ path: `${outdir}/${name}.png` });
  console.log(JSON.stringify({ page: path || "/", title: await page.title(), math, errors }));
  if (errors.length || math.errors || math.typeset < math.equations) failed = true;
  await page.close();
}
await browser.close();
process.exit(failed ? 1 : 0);
