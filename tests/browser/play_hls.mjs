// play_hls.mjs PAGE_URL SECONDS [TIMEOUT_SECONDS]
//
// Opens PAGE_URL (player.html?src=PLAYLIST) in Debian's headless Chromium
// (/usr/bin/chromium, or $CHROMIUM) driven by playwright-core, and waits
// until the page's <video> has played SECONDS, an error is recorded (any
// hls.js ERROR event, fatal or not, a video.error, a page error), or
// TIMEOUT_SECONDS (default SECONDS + 30) pass. Prints one JSON line:
//   {ok, played, seconds, timedOut, errors: [...], levels, fragsLoaded,
//    frags, codecs, videoWidth, videoHeight, decodedFrames, droppedFrames,
//    buffered, failedRequests, elapsed, ...}
// and exits 0 only if SECONDS played with no error.
import { chromium } from 'playwright-core';

const [url, secondsArg, timeoutArg] = process.argv.slice(2);
if (!url || !secondsArg) {
  console.error('usage: node play_hls.mjs PAGE_URL SECONDS [TIMEOUT_SECONDS]');
  process.exit(2);
}
const seconds = Number(secondsArg);
const timeoutMs = 1000 * (timeoutArg ? Number(timeoutArg) : seconds + 30);
const t0 = Date.now();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', // root on the test machines
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--autoplay-policy=no-user-gesture-required',
    '--mute-audio',
    // the machine's network is closed: no background fetches to Google
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-extensions',
    '--disable-default-apps',
    '--renderer-process-limit=1',
    // keep playing at full speed though nothing is on a screen
    '--disable-background-media-suspend',
    '--disable-renderer-backgrounding',
    '--disable-background-timer-throttling',
  ],
});

const failedRequests = [];
const console_ = [];
let result;
try {
  const page = await browser.newPage({ viewport: { width: 660, height: 380 } });
  page.on('requestfailed', (r) => failedRequests.push({ url: r.url(), error: r.failure()?.errorText }));
  page.on('response', (r) => {
    if (r.status() >= 400) failedRequests.push({ url: r.url(), status: r.status() });
  });
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console_.push(`${m.type()}: ${m.text()}`.slice(0, 300));
  });
  page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`.slice(0, 300)));
  await page.goto(url, { waitUntil: 'load', timeout: timeoutMs });

  const read = () => page.evaluate(() => {
    const v = document.getElementById('v');
    const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
    const b = [];
    if (v) for (let i = 0; i < v.buffered.length; i++) b.push([v.buffered.start(i), v.buffered.end(i)]);
    return Object.assign({}, window.__hls || { errors: [{ source: 'page', message: 'no window.__hls' }] }, {
      played: v ? v.currentTime : 0,
      paused: v ? v.paused : null,
      readyState: v ? v.readyState : null,
      videoWidth: v ? v.videoWidth : 0,
      videoHeight: v ? v.videoHeight : 0,
      duration: v ? v.duration : null,
      decodedFrames: q.totalVideoFrames ?? null,
      droppedFrames: q.droppedVideoFrames ?? null,
      buffered: b,
    });
  });

  let st;
  let timedOut = false;
  for (;;) {
    st = await read();
    if (st.errors.length || st.played >= seconds || st.ended) break;
    if (Date.now() - t0 > timeoutMs) { timedOut = true; break; }
    await new Promise((r) => setTimeout(r, 200));
  }
  const ok = !timedOut && st.errors.length === 0 && st.played >= seconds;
  result = Object.assign({ ok, seconds, timedOut }, st);
} catch (e) {
  result = { ok: false, seconds, played: 0, errors: [{ source: 'driver', message: String(e) }] };
} finally {
  await browser.close().catch(() => {});
}
result.failedRequests = failedRequests;
result.console = console_;
result.elapsed = (Date.now() - t0) / 1000;
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.ok ? 0 : 1);
