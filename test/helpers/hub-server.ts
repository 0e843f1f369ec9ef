/**
 * A Hugging Face Hub on loopback, answering the requests lib/models/hub.ts makes (through
 * @huggingface/hub and its own downloads), shaped like the real Hub's:
 *
 *   GET  /api/models/{repo}/revision/{rev}     {_id, id, sha, siblings: [{rfilename}], ...}
 *   POST /api/models/{repo}/paths-info/{rev}   [{type, path, oid, size, lfs?: {oid, size, pointerSize}}]
 *   GET  /{repo}/resolve/{rev}/{path}          small files: the bytes, ETag = git blob sha1;
 *                                              LFS files: 302 to /cdn/<sha256>, X-Linked-Etag, X-Linked-Size
 *
 * with X-Repo-Commit on resolves, 401/404 JSON errors with X-Error-Code, and faults to order:
 * wrong bytes, a connection closed mid-body, a body that stalls or is held until released, a 404, a 503.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRepo {
  /** commit → path → content. */
  commits: Record<string, Record<string, Buffer | string>>;
  /** branch or tag → commit. */
  refs: Record<string, string>;
  /** When set, every request needs `Authorization: Bearer <token>`. */
  token?: string;
}

export interface RecordedRequest {
  method: string;
  url: string;
  authorization?: string;
}

export interface Faults {
  /** Paths served with every byte flipped (same length). */
  corrupt?: Set<string>;
  /** Paths whose connection is destroyed after half the body, sent in two parts. */
  truncate?: Set<string>;
  /** Paths that send half the body and then wait until the client goes away. */
  stall?: Set<string>;
  /** Paths that send half the body and the rest once `release()` is called. */
  hold?: Set<string>;
  /** Paths whose resolve answers 404, echoing the request's Authorization header (as a careless server might). */
  missing?: Set<string>;
  /** Paths whose resolve answers 503 with an HTML page, as a failing front end does. */
  unavailable?: Set<string>;
}

export const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
/** The id git gives a blob: SHA-1 of "blob <size>\0" + content. */
export const gitBlobSha1 = (data: Buffer) => createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
/** Weights go through LFS on the Hub; small text files are plain git blobs. */
export const isLfs = (path: string) => /\.(safetensors|bin)$/.test(path);

export class FakeHub {
  readonly repos = new Map<string, FakeRepo>();
  readonly requests: RecordedRequest[] = [];
  faults: Faults = {};
  private server: Server | undefined;
  private held: (() => void)[] = [];
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        res.statusCode = 500;
        res.end(String(err));
      });
    });
    await new Promise<void>((done) => this.server!.listen(0, '127.0.0.1', done));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((done) => this.server?.close(() => done()) ?? done());
  }

  /** Sends the rest of every held body, and holds no more. */
  release(): void {
    this.faults.hold = undefined;
    for (const finish of this.held.splice(0)) finish();
  }

  private blobs(): Map<string, Buffer> {
    const all = new Map<string, Buffer>();
    for (const repo of this.repos.values())
      for (const files of Object.values(repo.commits))
        for (const content of Object.values(files)) all.set(sha256(Buffer.from(content)), Buffer.from(content));
    return all;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const authorization = req.headers.authorization;
    this.requests.push({ method: req.method ?? '', url: req.url ?? '', authorization });
    const url = new URL(req.url ?? '/', this.url);
    const json = (status: number, body: unknown, errorCode?: string) => {
      res.writeHead(status, { 'Content-Type': 'application/json', ...(errorCode ? { 'X-Error-Code': errorCode } : {}) });
      res.end(JSON.stringify(body));
    };

    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
    if (cdn) return this.sendBytes(res, this.blobs().get(cdn[1]!), url.searchParams.get('path') ?? '');

    const api = /^\/api\/models\/(.+?)\/(revision|paths-info)\/(.+)$/.exec(url.pathname);
    const resolve = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const repoId = api?.[1] ?? resolve?.[1];
    const repo = repoId === undefined ? undefined : this.repos.get(repoId);
    if (!repo) return json(404, { error: 'Repository not found' }, 'RepositoryNotFound');
    if (repo.token && authorization !== `Bearer ${repo.token}`) {
      // Echoes the credentials it got, so the test sees that the client hides them.
      return json(401, { error: `Invalid credentials in Authorization header: ${authorization}` }, 'RepoNotFound');
    }
    const rev = decodeURIComponent(api?.[3] ?? resolve?.[2] ?? '');
    const commit = repo.commits[rev] ? rev : repo.refs[rev];
    const files = commit === undefined ? undefined : repo.commits[commit];
    if (!commit || !files) return json(404, { error: `Invalid rev id: ${rev}` }, 'RevisionNotFound');

    if (api?.[2] === 'revision' && req.method === 'GET') {
      return json(200, {
        _id: `id-${repoId}`,
        id: repoId,
        sha: commit,
        siblings: Object.keys(files).map((rfilename) => ({ rfilename })),
        private: Boolean(repo.token),
        gated: false,
        downloads: 0,
        likes: 0,
        lastModified: '2024-01-01T00:00:00.000Z',
        pipeline_tag: 'fill-mask',
      });
    }
    if (api?.[2] === 'paths-info' && req.method === 'POST') {
      const body = JSON.parse(await readBody(req)) as { paths: string[] };
      return json(
        200,
        body.paths
          .filter((p) => files[p] !== undefined)
          .map((path) => {
            const content = Buffer.from(files[path]!);
            if (!isLfs(path)) return { type: 'file', path, oid: gitBlobSha1(content), size: content.length };
            const pointer = Buffer.from(
              `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(content)}\nsize ${content.length}\n`,
            );
            return {
              type: 'file',
              path,
              oid: gitBlobSha1(pointer),
              size: content.length,
              lfs: { oid: sha256(content), size: content.length, pointerSize: pointer.length },
            };
          }),
      );
    }
    if (resolve && req.method === 'GET') {
      const path = decodeURIComponent(resolve[3]!);
      if (this.faults.missing?.has(path)) return json(404, { error: `Entry not found (request had ${authorization})` }, 'EntryNotFound');
      if (this.faults.unavailable?.has(path)) {
        res.writeHead(503, { 'Content-Type': 'text/html' });
        res.end('<html>503 Service Temporarily Unavailable</html>');
        return;
      }
      const content = files[path] === undefined ? undefined : Buffer.from(files[path]!);
      if (!content) return json(404, { error: 'Entry not found' }, 'EntryNotFound');
      res.setHeader('X-Repo-Commit', commit);
      if (isLfs(path)) {
        res.writeHead(302, {
          Location: `/cdn/${sha256(content)}?path=${encodeURIComponent(path)}`,
          'X-Linked-Etag': `"${sha256(content)}"`,
          'X-Linked-Size': String(content.length),
          ETag: `"${gitBlobSha1(content)}"`,
        });
        res.end();
        return;
      }
      res.setHeader('ETag', `"${gitBlobSha1(content)}"`);
      return this.sendBytes(res, content, path);
    }
    json(400, { error: `unexpected request ${req.method} ${req.url}` });
  }

  private sendBytes(res: ServerResponse, content: Buffer | undefined, path: string): void {
    if (!content) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(content.length) });
    if (this.faults.corrupt?.has(path)) {
      res.end(Buffer.from(content.map((b) => b ^ 0xff)));
      return;
    }
    const half = content.subarray(0, Math.floor(content.length / 2));
    if (this.faults.truncate?.has(path)) {
      // Two parts, 150 ms apart (a slow network's pace: a progress bar redrawn at most every 100 ms draws the second).
      const quarter = Math.floor(half.length / 2);
      res.write(half.subarray(0, quarter), () =>
        setTimeout(() => res.write(half.subarray(quarter), () => setTimeout(() => res.destroy(), 20)), 150),
      );
      return;
    }
    if (this.faults.stall?.has(path)) {
      res.write(half);
      return;
    }
    if (this.faults.hold?.has(path)) {
      res.write(half);
      this.held.push(() => res.end(content.subarray(half.length)));
      return;
    }
    res.end(content);
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((done, fail) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => {
      text += chunk;
    });
    req.on('end', () => done(text));
    req.on('error', fail);
  });
}
