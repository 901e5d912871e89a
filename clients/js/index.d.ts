// Hand-written types of @arqonbus/client (index.js). Wire protocol:
// docs/PROTOCOL.md of the ArqonBus repository.

export const VERSION: string;

/** A token, or a function the client calls before every (re)connect and before exp. */
export type TokenSource = string | (() => string | Promise<string>);

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface Limits {
  max_frame_bytes: number;
  max_subscriptions: number;
  outbound_buffer_bytes: number;
  publish_rate: number;
  publish_burst: number;
}

export interface Welcome {
  op: 'welcome';
  session_id: string;
  node_id: string;
  tenant: string;
  user: string;
  limits: Limits;
  heartbeat_interval_ms: number;
  protocol_version: number;
}

export interface Member {
  user: string;
  session: string;
  node: string;
  /** Join time, Unix ms. */
  joined_at: number;
  info?: Record<string, unknown>;
}

export interface Message {
  subject: string;
  /** True for a text message (data is a string), false for binary (a Uint8Array). */
  text: boolean;
  data: string | Uint8Array;
  headers: Record<string, string>;
  traceId: string;
  /** Gateway accept time as exact decimal Unix ns ('' when absent). */
  ts: string;
  /** The same in ms (fractional), 0 when absent. */
  tsMs: number;
  /** Date.now() when the frame arrived. */
  receivedAt: number;
}

export interface PresencePage {
  subject: string;
  members: Member[];
  /** Members (connections) of the whole room. */
  count: number;
  /** Distinct users of the whole room. */
  users: number;
  /** '' on the last page. */
  cursor: string;
}

export interface ClientOptions {
  /** ws://host:port, with or without /v1/socket. */
  url: string;
  token: TokenSource;
  /** A WHATWG WebSocket constructor; default globalThis.WebSocket (node 20: pass `ws`). */
  WebSocket?: unknown;
  /** First reconnect delay cap (full jitter: random in [0, cap)); doubles per attempt. Default 250. */
  initialDelayMs?: number;
  /** Backoff cap. Default 30000. */
  maxDelayMs?: number;
  /** After close 1001/1012 without an explicit "retry after": random in [0, this). Default 1000. */
  hintDelayMs?: number;
  /** After close 1013 without an explicit "retry after". Default 5000. */
  tryAgainLaterMs?: number;
  /** Open + WELCOME. Default 10000. */
  connectTimeoutMs?: number;
  /** ACK, PONG and presence answers. Default 10000. */
  requestTimeoutMs?: number;
  /** Protocol ping period; 0 = half the server's heartbeat interval, at most 15 s. */
  pingIntervalMs?: number;
  /** Nothing received this long after a ping: the connection is dead. Default 10000. */
  pongTimeoutMs?: number;
  /** With a token function: reconnect with a fresh token this long before exp (0 = off). Default 30000. */
  tokenRefreshMs?: number;
  /** Messages an async iterator buffers before dropping the oldest. Default 1000. */
  iteratorBuffer?: number;
  /** After a failed open, GET the socket URL to tell a 401 from a network error (browsers). Default true. */
  probeAuth?: boolean;
}

export interface ConnectingEvent { attempt: number }
export interface ConnectedEvent { welcome: Welcome; reconnect: boolean }
export interface DisconnectedEvent {
  code: number;
  reason: string;
  willReconnect: boolean;
  /** Delay before the next attempt (ms), when willReconnect. */
  delayMs?: number;
  /** A fatal auth error: the client is closed for good. */
  fatal?: boolean;
}
export interface StateEvent extends Partial<DisconnectedEvent> { state: ConnectionState }
export interface PresenceEvent {
  op: 'presence_update' | 'presence_leave';
  subject: string;
  member: Member;
  reason?: string;
}

export interface ClientEvents {
  connecting: ConnectingEvent;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  closed: { code: number; reason: string; fatal: boolean };
  state: StateEvent;
  message: Message;
  join: PresenceEvent;
  leave: PresenceEvent;
  error: Error;
}

export interface SubscribeOptions {
  /** Join the room (a literal subject) as a presence member. */
  presence?: boolean;
  /** The member's info (a JSON object, at most 256 bytes). */
  info?: Record<string, unknown>;
  onJoin?: (member: Member, reason: undefined, sub: Subscription) => void;
  onLeave?: (member: Member, reason: string, sub: Subscription) => void;
  /** The full member list whenever it changes. */
  onMembers?: (members: Member[], _: undefined, sub: Subscription) => void;
}

export interface PublishOptions {
  headers?: Record<string, string>;
  /** Wait for the server's ACK; the promise rejects with ArqonError(code) on its ERROR. */
  ack?: boolean;
  timeoutMs?: number;
}

export class ArqonError extends Error {
  /** The server's code (VALIDATION_ERROR, RATE_LIMIT_EXCEEDED, ...) or NOT_CONNECTED, DISCONNECTED, TIMEOUT, CLOSED, AUTH. */
  code: string;
  serverMessage: string;
  id?: number;
}

export class Subscription implements AsyncIterable<Message> {
  readonly pattern: string;
  readonly presence: boolean;
  /** Resolves on the server's ACK; rejects with its ERROR. */
  readonly ready: Promise<Subscription>;
  /** Presence rooms: the members by session id (kept live, refreshed after reconnects). */
  members: Map<string, Member>;
  readonly count: number;
  /** Messages the async iterator dropped (buffer full). */
  dropped: number;
  closed: boolean;
  unsubscribe(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<Message>;
}

export class ArqonClient {
  constructor(options: ClientOptions);
  readonly state: ConnectionState;
  /** The last WELCOME. */
  readonly welcome: Welcome | null;
  readonly stats: { sent: number; received: number; reconnects: number };
  /** Resolves with the first WELCOME; rejects with ArqonError('AUTH') on a fatal auth error. */
  connect(): Promise<Welcome>;
  close(code?: number, reason?: string): void;
  on<K extends keyof ClientEvents>(event: K, fn: (e: ClientEvents[K]) => void): () => void;
  off<K extends keyof ClientEvents>(event: K, fn: (e: ClientEvents[K]) => void): void;
  subscribe(pattern: string, onMessage?: (m: Message, sub: Subscription) => void, opts?: SubscribeOptions): Subscription;
  subscribe(pattern: string, opts: SubscribeOptions): Subscription;
  unsubscribe(sub: Subscription): Promise<void>;
  publish(subject: string, data: string | Uint8Array | ArrayBuffer, opts?: PublishOptions): Promise<void>;
  presence(room: string, opts?: { limit?: number; cursor?: string; countOnly?: boolean; timeoutMs?: number }): Promise<PresencePage>;
  presenceAll(room: string, opts?: { limit?: number }): Promise<PresencePage>;
  count(room: string): Promise<{ count: number; users: number }>;
  /** Protocol ping round trip in ms. */
  ping(): Promise<number>;
}

export function subjectMatches(pattern: string, subject: string): boolean;
export function tokenExpiry(token: string): number;
export function reconnectHint(reason: string): number;
export function backoffDelay(attempt: number, initialMs: number, maxMs: number, rand?: () => number): number;
export const frames: Record<string, unknown>;
export default ArqonClient;
