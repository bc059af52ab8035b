// A real chat server for the tests: gunicorn on a free port, its messages in a store of its own.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const PYTHON = process.env.CHAT_PYTHON || join(ROOT, ".venv", "bin", "python");

/** The WebSocket the tests use: the ws package when installed, else the runtime's own. */
export const WebSocket = await import("ws").then((module) => module.WebSocket, () => globalThis.WebSocket);

/** Return a port nothing listens on now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Wait until condition() returns something true, or fail after timeout ms. */
export async function waitFor(condition, timeout = 10000, what = "condition") {
  const deadline = Date.now() + timeout;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

export class Server {
  constructor(env = {}) {
    this.env = env;
    this.folder = mkdtempSync(join(tmpdir(), "chat-js-"));
    this.process = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Start gunicorn (on the same port as before, after a stop) and wait until it answers /healthz. */
  async start() {
    this.port ??= await freePort();
    const env = {
      ...process.env,
      CHAT_HEARTBEAT_INTERVAL: "1",
      CHAT_MAX_CONNECTIONS_PER_IP: "100000",
      CHAT_STORE_URL: `sqlite:///${this.folder}/chat.db`,
      ...this.env,
    };
    delete env.PROMETHEUS_MULTIPROC_DIR;
    const args = ["-m", "gunicorn", "-c", "gunicorn.conf.py", "-k", "gthread", "-w", "1", "--threads", "50",
      "-b", `127.0.0.1:${this.port}`, "--graceful-timeout", "5", "app:app"];
    const child = spawn(PYTHON, args, { cwd: ROOT, env, stdio: ["ignore", "ignore", "pipe"] });
    this.process = child;
    let log = "";
    child.stderr.on("data", (chunk) => {
      log += chunk;
    });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    this.exited = exited;
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}: ${log}`);
      try {
        return (await fetch(this.url + "/healthz")).ok;
      } catch {
        return false;
      }
    }, 20000, "the chat server");
    return this;
  }

  /** Stop the server (SIGTERM: it closes its sockets with 1001) and wait for it to exit. */
  async stop() {
    if (this.process === null) return;
    this.process.kill("SIGTERM");
    await this.exited;
    this.process = null;
  }

  async restart() {
    await this.stop();
    return this.start();
  }

  /** Stop the server and remove its store. */
  async dispose() {
    await this.stop();
    rmSync(this.folder, { recursive: true, force: true });
  }
}
