// The sharp contender: the idiomatic per-master fan-out with clone().
//
//   node sharp_fanout.cjs JOBS.json OUTDIR CONCURRENCY
//
// JOBS.json: [{master, outputs: [{name, trim, fit, width, height, gravity, fill_ratio,
// background, format, quality, effort, progressive, max_bytes, min_quality, keep_alpha}]}].
// Each master is opened once; every output is a clone() of that pipeline (sharp's documented
// way to make several outputs from one input). CONCURRENCY masters run at once, and libvips
// threads are set so that CONCURRENCY x threads = cores. Prints {"seconds": ..} as JSON.
// With a "task" job list ({task: {master, width, height, quality, jpeg}, count}) it runs sharp's
// own published benchmark task COUNT times instead (jpeg: more of sharp's jpeg() options, none
// for sharp's defaults) and prints {"ops_per_s": .., "bytes": .., "cpu_ms_per_op": ..} (bytes:
// one output's; CPU: user + system time of the whole process over the COUNT operations).
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const sharp = require(process.env.SHARP_MODULE || "sharp");

const [jobsFile, outDir, concurrencyArg] = process.argv.slice(2);
const concurrency = Math.max(1, parseInt(concurrencyArg || "1", 10));
sharp.concurrency(Math.max(1, Math.floor(os.cpus().length / concurrency)));
sharp.cache(false);

const GRAVITY = {
  centre: "centre", north: "north", south: "south", east: "east", west: "west",
  "north-east": "northeast", "north-west": "northwest", "south-east": "southeast",
  "south-west": "southwest",
};

function hex(colour) {
  return { r: parseInt(colour.slice(1, 3), 16), g: parseInt(colour.slice(3, 5), 16),
           b: parseInt(colour.slice(5, 7), 16), alpha: 1 };
}

function encoder(image, o, quality) {
  switch (o.format) {
    case "jpeg": return image.jpeg({ quality, progressive: o.progressive, optimiseCoding: true });
    case "webp": return image.webp({ quality, effort: o.effort });
    case "avif": return image.avif({ quality, effort: o.effort });
    default: return image.png({ compressionLevel: o.effort });
  }
}

async function encode(image, o) {
  // A byte budget: the highest quality from o.quality down to o.min_quality that fits (bisection),
  // as the engine does.
  let data = await encoder(image.clone(), o, o.quality).toBuffer();
  if (!o.max_bytes || data.length <= o.max_bytes) return data;
  let lo = o.min_quality, hi = o.quality - 1, best = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const attempt = await encoder(image.clone(), o, mid).toBuffer();
    if (attempt.length <= o.max_bytes) { best = attempt; lo = mid + 1; } else { hi = mid - 1; }
  }
  return best || (await encoder(image.clone(), o, o.min_quality).toBuffer());
}

async function render(base, o) {
  let image = base.clone();
  const flatten = o.format === "jpeg" || !o.keep_alpha;
  if (flatten) image = image.flatten({ background: hex(o.background) });
  if (o.trim !== null) image = image.trim({ threshold: o.trim });
  if (o.fit === "pad") {
    const r = o.fill_ratio || 1;
    const inner = await image
      .resize(Math.max(1, Math.round(o.width * r)), Math.max(1, Math.round(o.height * r)),
              { fit: "inside", kernel: "lanczos3" })
      .raw().toBuffer({ resolveWithObject: true });
    const { width, height, channels } = inner.info;
    const left = Math.floor((o.width - width) / 2), top = Math.floor((o.height - height) / 2);
    image = sharp(inner.data, { raw: { width, height, channels } }).extend({
      left, top, right: o.width - width - left, bottom: o.height - height - top,
      background: hex(o.background),
    });
  } else if (o.fit === "fill") {
    image = image.resize(o.width, o.height, {
      fit: "cover", kernel: "lanczos3",
      position: o.gravity === "attention" ? sharp.strategy.attention : GRAVITY[o.gravity],
    });
  } else {
    image = image.resize(o.width || null, o.height || null, {
      fit: "inside", kernel: "lanczos3", withoutEnlargement: o.fit === "limit",
    });
  }
  const data = await encode(image, o);
  fs.writeFileSync(path.join(outDir, o.name), data);
}

async function master(job) {
  const base = sharp(job.master, { failOn: "truncated" }).rotate().toColourspace("srgb");
  for (const o of job.outputs) await render(base, o);
}

async function pool(items, worker) {
  let next = 0;
  const run = async () => { while (next < items.length) await worker(items[next++]); };
  await Promise.all(Array.from({ length: concurrency }, run));
}

async function main() {
  const jobs = JSON.parse(fs.readFileSync(jobsFile, "utf8"));
  fs.mkdirSync(outDir, { recursive: true });
  const start = process.hrtime.bigint();
  if (jobs.task) {
    const t = jobs.task;
    const input = fs.readFileSync(t.master);
    const cpu = process.cpuUsage();  // every thread of this process: libuv's pool, V8's
    let bytes = 0;
    await pool(Array.from({ length: jobs.count }, (_, i) => i), async () => {
      const data = await sharp(input).resize(t.width, t.height, { kernel: "lanczos3" })
        .jpeg({ quality: t.quality, ...(t.jpeg || {}) }).toBuffer();
      bytes = data.length;
    });
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const used = process.cpuUsage(cpu);
    console.log(JSON.stringify({ ops_per_s: jobs.count / seconds, seconds, bytes,
                                 cpu_ms_per_op: (used.user + used.system) / 1000 / jobs.count }));
    return;
  }
  await pool(jobs, master);
  console.log(JSON.stringify({ seconds: Number(process.hrtime.bigint() - start) / 1e9 }));
}

main().catch((err) => { console.error(err); process.exit(1); });
