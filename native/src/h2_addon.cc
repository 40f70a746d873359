// JavaScript classes over h2_conn.h: H2Client (one outgoing connection) and H2Listener (a listening
// socket and its incoming connections). Events reach JavaScript through a thread-safe function as
// onEvent(kind, connId, streamId, a, b) (kinds and arguments: native/h2-native.ts). Bytes lent to
// H2Client.send are held by a reference until the writer thread is done with them; connection
// threads never touch JavaScript values.
#include <napi.h>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "buffer_pool.h"
#include "h2_conn.h"

namespace {

using lasp::h2::Event;

class EventSource;

// The thread-safe function's context: the object it belongs to, cleared when that object goes.
struct Ctx {
  EventSource* owner = nullptr;
};

void CallJs(Napi::Env env, Napi::Function cb, Ctx* ctx, Event* raw);
using Tsfn = Napi::TypedThreadSafeFunction<Ctx, Event, CallJs>;

// What H2Client and H2Listener share: the thread-safe function that carries their connections'
// events to JavaScript's onEvent.
class EventSource {
 public:
  virtual ~EventSource() = default;
  // Drops the references of bytes the writer is done with (main thread, before every event).
  virtual void drain() {}

 protected:
  // Starts the events; the returned sink goes to the connections.
  lasp::h2::Sink start_events(Napi::Env env, Napi::Function cb, const char* name) {
    ctx_ = new Ctx{this};
    tsfn_ = Tsfn::New(env, cb, name, 0, 1, ctx_, [](Napi::Env, void*, Ctx* c) { delete c; });
    return [tsfn = tsfn_](Event&& e) mutable {
      auto* p = new Event(std::move(e));
      if (tsfn.NonBlockingCall(p) != napi_ok) {
        lasp::h2::free_body(*p);
        delete p;
      }
    };
  }

  // Once the connections' threads are stopped: no event reaches this object any more.
  void stop_events() {
    ctx_->owner = nullptr;
    tsfn_.Release();
  }

 private:
  Ctx* ctx_ = nullptr;
  Tsfn tsfn_;
};

// Largest HTTP/2 stream id.
constexpr double kMaxStreamId = 2147483647.0;

void CallJs(Napi::Env env, Napi::Function cb, Ctx* ctx, Event* raw) {
  std::unique_ptr<Event> e(raw);
  if (env == nullptr || cb.IsEmpty() || ctx == nullptr || ctx->owner == nullptr) {
    lasp::h2::free_body(*e);
    return;
  }
  ctx->owner->drain();
  Napi::Value a = env.Undefined(), b = env.Undefined();
  switch (e->kind) {
    case Event::kHeaders: {
      auto arr = Napi::Array::New(env, e->fields.size() * 2);
      for (size_t i = 0; i < e->fields.size(); i++) {
        arr.Set(uint32_t(2 * i), Napi::String::New(env, e->fields[i].first));
        arr.Set(uint32_t(2 * i + 1), Napi::String::New(env, e->fields[i].second));
      }
      a = arr;
      b = Napi::Boolean::New(env, e->flag);
      break;
    }
    case Event::kMessage:
      if (e->body == nullptr) {
        a = Napi::Buffer<uint8_t>::New(env, 0);
      } else {
        // The block is pooled and recycled, so V8 need not count it as external memory: it counts
        // every external ArrayBuffer, and a megabyte per message started a full mark-compact every
        // ~70 messages (--trace-incremental-marking: "external memory pressure"). Taking the
        // length back once here removed them all (1200 messages of 1 MiB: 17 → 0), and other
        // Buffers are still collected as before (scratch check: 2000 transient 1 MiB Buffers after
        // 3000 messages, RSS +34 MB against +39 MB after 10). Taking it back again in the finalizer
        // brought the mark-compacts back, so V8 does not count the release itself.
        a = Napi::Buffer<uint8_t>::New(
            env, e->body, e->len,
            [](Napi::Env, uint8_t* p, size_t* len) {
              lasp::pool_give(p, *len);
              delete len;
            },
            new size_t(e->len));
        Napi::MemoryManagement::AdjustExternalMemory(env, -int64_t(e->len));
        e->body = nullptr;
      }
      break;
    case Event::kStreamEnd:
      a = Napi::Boolean::New(env, e->flag);
      break;
    case Event::kReset:
      a = Napi::Number::New(env, double(e->code));
      break;
    case Event::kStreamError:
      a = Napi::String::New(env, e->text);
      break;
    case Event::kClosed:
    case Event::kEstablished:
      a = Napi::String::New(env, e->text);
      b = Napi::Number::New(env, double(e->code));
      break;
  }
  try {
    cb.Call({Napi::Number::New(env, e->kind), Napi::Number::New(env, double(e->conn)), Napi::Number::New(env, e->stream), a, b});
  } catch (const Napi::Error& err) {
    err.ThrowAsJavaScriptException();
  }
}

[[noreturn]] void type_error(Napi::Env env, const std::string& what) { throw Napi::TypeError::New(env, "lasp h2: " + what); }

uint32_t u32_arg(const Napi::CallbackInfo& info, size_t i, const char* name, double max = 4294967295.0) {
  const double d = info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
  if (!(d >= 0 && d <= max && d == std::floor(d)))
    type_error(info.Env(), std::string(name) + " must be an integer in [0, " + std::to_string(uint64_t(max)) + "]");
  return uint32_t(d);
}

// opts: {maxMessageBytes, recvWindow, windowBatch, maxFrame, maxStreams, establishMs}; absent = default.
lasp::h2::Config config_arg(Napi::Env env, Napi::Value v, bool server) {
  lasp::h2::Config c;
  c.server = server;
  if (!v.IsObject()) type_error(env, "options must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto num = [&](const char* k, double lo, double hi, double def) {
    Napi::Value x = o.Get(k);
    if (x.IsUndefined()) return def;
    const double d = x.IsNumber() ? x.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= lo && d <= hi && d == std::floor(d)))
      type_error(env, std::string("options.") + k + " must be an integer in [" + std::to_string(uint64_t(lo)) + ", " + std::to_string(uint64_t(hi)) + "]");
    return d;
  };
  c.max_message = size_t(num("maxMessageBytes", 0, 4294967295.0, double(c.max_message)));
  c.recv_window = uint32_t(num("recvWindow", 65535, 2147483647.0, c.recv_window));
  c.window_batch = uint32_t(num("windowBatch", 1, 2147483647.0, c.window_batch));
  c.max_frame = uint32_t(num("maxFrame", 16384, 16777215.0, c.max_frame));
  c.max_streams = uint32_t(num("maxStreams", 1, 1000, c.max_streams));
  c.establish_ms = int(num("establishMs", 1, 600000, c.establish_ms));
  return c;
}

lasp::h2::Fields fields_arg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsArray()) type_error(info.Env(), "fields must be an array of strings [name, value, ...]");
  Napi::Array a = info[i].As<Napi::Array>();
  if (a.Length() % 2 != 0) type_error(info.Env(), "fields must have an even length");
  lasp::h2::Fields f;
  for (uint32_t k = 0; k < a.Length(); k += 2) {
    Napi::Value n = a.Get(k), v = a.Get(k + 1);
    if (!n.IsString() || !v.IsString()) type_error(info.Env(), "fields must be strings");
    f.emplace_back(n.As<Napi::String>().Utf8Value(), v.As<Napi::String>().Utf8Value());
  }
  return f;
}

// ---- H2Client --------------------------------------------------------------------------------

class H2Client : public Napi::ObjectWrap<H2Client>, public EventSource {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "H2Client",
                       {InstanceMethod("request", &H2Client::Request), InstanceMethod("send", &H2Client::Send),
                        InstanceMethod("reset", &H2Client::Reset), InstanceMethod("close", &H2Client::Close)});
  }

  // new H2Client(host, port, options, onEvent)
  explicit H2Client(const Napi::CallbackInfo& info) : Napi::ObjectWrap<H2Client>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 4 || !info[0].IsString() || !info[3].IsFunction())
      type_error(env, "new H2Client(host: string, port: number, options: object, onEvent: function)");
    const std::string host = info[0].As<Napi::String>().Utf8Value();
    const uint32_t port = u32_arg(info, 1, "port", 65535);
    if (port == 0) type_error(env, "port must be in [1, 65535], got 0");
    const lasp::h2::Config cfg = config_arg(env, info[2], false);
    conn_ = std::make_unique<lasp::h2::Conn>(0, cfg, start_events(env, info[3].As<Napi::Function>(), "lasp-h2-client"));
    conn_->start_client(host, int(port));
  }

  ~H2Client() override { shutdown(); }

  void drain() override {
    if (!conn_) return;
    for (uint64_t t : conn_->take_written()) held_.erase(t);
  }

 private:
  void shutdown() {
    if (closed_) return;
    closed_ = true;
    conn_->close();
    stop_events();
    held_.clear();
  }

  void check_open(Napi::Env env) {
    if (closed_) throw Napi::Error::New(env, "lasp h2: the connection is closed");
  }

  // request(streamId, fields, endStream): HEADERS opening a stream.
  Napi::Value Request(const Napi::CallbackInfo& info) {
    check_open(info.Env());
    const uint32_t sid = u32_arg(info, 0, "streamId", kMaxStreamId);
    if (sid % 2 == 0) type_error(info.Env(), "streamId must be odd, got " + std::to_string(sid));
    const bool ok = conn_->headers(sid, fields_arg(info, 1), info.Length() > 2 && info[2].ToBoolean());
    return Napi::Boolean::New(info.Env(), ok);
  }

  // send(streamId, head, data | undefined, endStream): one DATA payload (split into frames as the
  // peer's windows and frame size require). Returns 0 when the connection is over, 2 when every
  // byte is already written to the socket (the arrays are free again), else 1 (they stay referenced
  // until the writer thread is done with them).
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    check_open(env);
    drain();
    const uint32_t sid = u32_arg(info, 0, "streamId", kMaxStreamId);
    std::vector<lasp::h2::Seg> segs;
    std::vector<Napi::ObjectReference> refs;
    for (size_t i = 1; i <= 2; i++) {
      if (info.Length() <= i || info[i].IsUndefined()) continue;
      if (!info[i].IsTypedArray()) type_error(env, i == 1 ? "head must be a Uint8Array" : "data must be a Uint8Array or undefined");
      Napi::TypedArray t = info[i].As<Napi::TypedArray>();
      const auto* p = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
      if (t.ByteLength() == 0) continue;
      segs.push_back({p, t.ByteLength()});
      refs.push_back(Napi::Persistent(t.As<Napi::Object>()));
    }
    const uint64_t token = next_token_++;
    held_[token] = std::move(refs);
    const bool ok = conn_->data(sid, std::move(segs), std::string(), token, info.Length() > 3 && info[3].ToBoolean());
    return Napi::Number::New(env, !ok ? 0 : conn_->is_written(token) ? 2 : 1);
  }

  // reset(streamId, code)
  Napi::Value Reset(const Napi::CallbackInfo& info) {
    check_open(info.Env());
    const uint32_t sid = u32_arg(info, 0, "streamId", kMaxStreamId);
    return Napi::Boolean::New(info.Env(), conn_->rst(sid, u32_arg(info, 1, "code")));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    shutdown();
    return info.Env().Undefined();
  }

  std::unique_ptr<lasp::h2::Conn> conn_;
  std::map<uint64_t, std::vector<Napi::ObjectReference>> held_;
  uint64_t next_token_ = 1;
  bool closed_ = false;
};

// ---- H2Listener ------------------------------------------------------------------------------

class H2Listener : public Napi::ObjectWrap<H2Listener>, public EventSource {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "H2Listener",
                       {InstanceMethod("respond", &H2Listener::Respond), InstanceMethod("send", &H2Listener::Send),
                        InstanceMethod("reset", &H2Listener::Reset), InstanceMethod("release", &H2Listener::Release),
                        InstanceMethod("close", &H2Listener::Close), InstanceAccessor("port", &H2Listener::Port, nullptr)});
  }

  // new H2Listener(host, options, onEvent): bound to host:0 and accepting when it returns.
  explicit H2Listener(const Napi::CallbackInfo& info) : Napi::ObjectWrap<H2Listener>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsString() || !info[2].IsFunction())
      type_error(env, "new H2Listener(host: string, options: object, onEvent: function)");
    const lasp::h2::Config cfg = config_arg(env, info[1], true);
    listener_ = std::make_unique<lasp::h2::Listener>(cfg, start_events(env, info[2].As<Napi::Function>(), "lasp-h2-listener"));
    try {
      port_ = listener_->listen(info[0].As<Napi::String>().Utf8Value());
    } catch (const std::exception& e) {
      shutdown();
      throw Napi::Error::New(env, std::string("lasp h2: ") + e.what());
    }
  }

  ~H2Listener() override { shutdown(); }

 private:
  void shutdown() {
    if (closed_) return;
    closed_ = true;
    listener_->close();
    stop_events();
  }

  static uint64_t conn_id_arg(const Napi::CallbackInfo& info) {
    const double d = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 1 && d == std::floor(d))) type_error(info.Env(), "connId must be a positive integer");
    return uint64_t(d);
  }

  std::shared_ptr<lasp::h2::Conn> conn_arg(const Napi::CallbackInfo& info) {
    const uint64_t id = conn_id_arg(info);
    return closed_ ? nullptr : listener_->get(id);
  }

  Napi::Value Port(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), port_); }

  // respond(connId, streamId, fields, endStream): false when the connection is gone.
  Napi::Value Respond(const Napi::CallbackInfo& info) {
    auto c = conn_arg(info);
    const uint32_t sid = u32_arg(info, 1, "streamId", kMaxStreamId);
    const auto fields = fields_arg(info, 2);
    const bool ok = c && c->headers(sid, fields, info.Length() > 3 && info[3].ToBoolean());
    return Napi::Boolean::New(info.Env(), ok);
  }

  // send(connId, streamId, bytes): bytes are copied.
  Napi::Value Send(const Napi::CallbackInfo& info) {
    auto c = conn_arg(info);
    const uint32_t sid = u32_arg(info, 1, "streamId", kMaxStreamId);
    if (info.Length() < 3 || !info[2].IsTypedArray()) type_error(info.Env(), "bytes must be a Uint8Array");
    Napi::TypedArray t = info[2].As<Napi::TypedArray>();
    std::string owned(static_cast<const char*>(t.ArrayBuffer().Data()) + t.ByteOffset(), t.ByteLength());
    const bool ok = c && c->data(sid, {}, std::move(owned), 0, false);
    return Napi::Boolean::New(info.Env(), ok);
  }

  // reset(connId, streamId, code)
  Napi::Value Reset(const Napi::CallbackInfo& info) {
    auto c = conn_arg(info);
    const uint32_t sid = u32_arg(info, 1, "streamId", kMaxStreamId);
    const uint32_t code = u32_arg(info, 2, "code");
    return Napi::Boolean::New(info.Env(), c && c->rst(sid, code));
  }

  // release(connId): closes the connection (if open) and forgets it.
  Napi::Value Release(const Napi::CallbackInfo& info) {
    const uint64_t id = conn_id_arg(info);
    if (!closed_) listener_->release(id);
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    shutdown();
    return info.Env().Undefined();
  }

  std::unique_ptr<lasp::h2::Listener> listener_;
  int port_ = 0;
  bool closed_ = false;
};

}  // namespace

namespace lasp {
void InitH2(Napi::Env env, Napi::Object exports) {
  exports.Set("H2Client", H2Client::Define(env));
  exports.Set("H2Listener", H2Listener::Define(env));
}
}  // namespace lasp
