// sharp's encoders at their defaults, on given lossless images (benchmarks/bytes.py).
//
//   node sharp_encode.cjs JOBS.json OUTDIR
//
// JOBS.json: [{input, name, format, quality, progressive, max_bytes, min_quality}]. Each input
// (a PNG: fanout's own lossless rendering of a recipe) is encoded with sharp's default settings
// at the job's quality (benchmarks/bytes.py names it: sharp's default quality, or the recipe's
// own): JPEG libjpeg-turbo settings, mozjpeg off, 4:2:0, optimised Huffman coding; WebP effort
// 4; AVIF effort 4; progressive as the recipe says. Under a byte
// budget, the highest quality from the default down to min_quality that fits (bisection), as
// benchmarks/peers/sharp_fanout.cjs does. Prints {"seconds": ..} as JSON.
"use strict";
const fs = require("fs");
const path = require("path");
const sharp = require(process.env.SHARP_MODULE || "sharp");

function encoder(input, o, quality) {
  const image = sharp(input);
  switch (o.format) {
    case "jpeg": return image.jpeg({ quality, progressive: o.progressive });
    case "webp": return image.webp({ quality });
    default: return image.avif({ quality });
  }
}

async function encode(o) {
  const top = o.quality;
  let data = await encoder(o.input, o, top).toBuffer();
  if (!o.max_bytes || data.length <= o.max_bytes) return data;
  let lo = o.min_quality, hi = top - 1, best = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const attempt = await encoder(o.input, o, mid).toBuffer();
    if (attempt.length <= o.max_bytes) { best = attempt; lo = mid + 1; } else { hi = mid - 1; }
  }
  return best || (await encoder(o.input, o, o.min_quality).toBuffer());
}

async function main() {
  const [jobsFile, outDir] = process.argv.slice(2);
  const jobs = JSON.parse(fs.readFileSync(jobsFile, "utf8"));
  fs.mkdirSync(outDir, { recursive: true });
  sharp.cache(false);
  const start = process.hrtime.bigint();
  for (const o of jobs) fs.writeFileSync(path.join(outDir, o.name), await encode(o));
  console.log(JSON.stringify({ seconds: Number(process.hrtime.bigint() - start) / 1e9 }));
}

main().catch((err) => { console.error(err); process.exit(1); });
