// HTTP/2 connections on threads of their own (h2_conn.h).
#include "h2_conn.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "buffer_pool.h"

namespace lasp::h2 {
namespace {

constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr size_t kPrefaceLen = 24;
constexpr uint32_t kDefaultWindow = 65535;
constexpr int64_t kMaxWindow = 0x7fffffff;
constexpr uint32_t kMaxControlFrame = 64u << 10;
constexpr size_t kMaxHeaderList = 16u << 10;
// Reads that are not straight into a message body go here; kept small so that little of a large
// message is copied out of it (the rest is read into the body directly).
constexpr size_t kReadBuffer = 32u << 10;
constexpr size_t kMaxConnections = 256;

enum Type : uint8_t { DATA = 0, HEADERS = 1, PRIORITY = 2, RST_STREAM = 3, SETTINGS = 4, PUSH_PROMISE = 5, PING = 6, GOAWAY = 7, WINDOW_UPDATE = 8, CONTINUATION = 9 };
enum Flag : uint8_t { END_STREAM = 0x1, ACK = 0x1, END_HEADERS = 0x4, PADDED = 0x8, PRIORITY_FLAG = 0x20 };
enum Err : uint32_t { NO_ERROR = 0, PROTOCOL_ERROR = 1, INTERNAL_ERROR = 2, FLOW_CONTROL_ERROR = 3, STREAM_CLOSED = 5, FRAME_SIZE_ERROR = 6, REFUSED_STREAM = 7, COMPRESSION_ERROR = 9 };
enum Setting : uint16_t { HEADER_TABLE_SIZE = 1, ENABLE_PUSH = 2, MAX_CONCURRENT_STREAMS = 3, INITIAL_WINDOW_SIZE = 4, MAX_FRAME_SIZE = 5, MAX_HEADER_LIST_SIZE = 6 };

struct ProtocolError {
  uint32_t code;
  std::string why;
};

void put_head(std::string& out, uint32_t len, uint8_t type, uint8_t flags, uint32_t sid) {
  const uint8_t h[9] = {uint8_t(len >> 16), uint8_t(len >> 8), uint8_t(len), type, flags, uint8_t((sid >> 24) & 0x7f), uint8_t(sid >> 16), uint8_t(sid >> 8), uint8_t(sid)};
  out.append(reinterpret_cast<const char*>(h), 9);
}

void put_u32(std::string& out, uint32_t v) {
  const uint8_t b[4] = {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
  out.append(reinterpret_cast<const char*>(b), 4);
}

uint32_t get_u32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }

std::string frame(uint8_t type, uint8_t flags, uint32_t sid, const std::string& payload = {}) {
  std::string f;
  put_head(f, uint32_t(payload.size()), type, flags, sid);
  f += payload;
  return f;
}

std::string settings_frame(const std::vector<std::pair<uint16_t, uint32_t>>& s) {
  std::string p;
  for (auto& [id, v] : s) {
    p.push_back(char(id >> 8));
    p.push_back(char(id));
    put_u32(p, v);
  }
  return frame(SETTINGS, 0, 0, p);
}

std::string window_update(uint32_t sid, uint32_t inc) {
  std::string p;
  put_u32(p, inc & 0x7fffffff);
  return frame(WINDOW_UPDATE, 0, sid, p);
}

std::string rst_frame(uint32_t sid, uint32_t code) {
  std::string p;
  put_u32(p, code);
  return frame(RST_STREAM, 0, sid, p);
}

std::string goaway_frame(uint32_t last, uint32_t code, const std::string& why) {
  std::string p;
  put_u32(p, last & 0x7fffffff);
  put_u32(p, code);
  p += why.substr(0, 200);
  return frame(GOAWAY, 0, 0, p);
}

// ---- HPACK (RFC 7541), the subset raw-h2.ts speaks -------------------------------------------

const char* const kStatic[61][2] = {
    {":authority", ""}, {":method", "GET"}, {":method", "POST"}, {":path", "/"}, {":path", "/index.html"},
    {":scheme", "http"}, {":scheme", "https"}, {":status", "200"}, {":status", "204"}, {":status", "206"},
    {":status", "304"}, {":status", "400"}, {":status", "404"}, {":status", "500"}, {"accept-charset", ""},
    {"accept-encoding", "gzip, deflate"}, {"accept-language", ""}, {"accept-ranges", ""}, {"accept", ""},
    {"access-control-allow-origin", ""}, {"age", ""}, {"allow", ""}, {"authorization", ""}, {"cache-control", ""},
    {"content-disposition", ""}, {"content-encoding", ""}, {"content-language", ""}, {"content-length", ""},
    {"content-location", ""}, {"content-range", ""}, {"content-type", ""}, {"cookie", ""}, {"date", ""}, {"etag", ""},
    {"expect", ""}, {"expires", ""}, {"from", ""}, {"host", ""}, {"if-match", ""}, {"if-modified-since", ""},
    {"if-none-match", ""}, {"if-range", ""}, {"if-unmodified-since", ""}, {"last-modified", ""}, {"link", ""},
    {"location", ""}, {"max-forwards", ""}, {"proxy-authenticate", ""}, {"proxy-authorization", ""}, {"range", ""},
    {"referer", ""}, {"refresh", ""}, {"retry-after", ""}, {"server", ""}, {"set-cookie", ""},
    {"strict-transport-security", ""}, {"transfer-encoding", ""}, {"user-agent", ""}, {"vary", ""}, {"via", ""},
    {"www-authenticate", ""}};

void hpack_int(std::string& out, uint8_t first, int prefix, size_t v) {
  const size_t max = (size_t(1) << prefix) - 1;
  if (v < max) {
    out.push_back(char(first | v));
    return;
  }
  out.push_back(char(first | max));
  v -= max;
  while (v >= 128) {
    out.push_back(char((v & 127) | 128));
    v >>= 7;
  }
  out.push_back(char(v));
}

struct HpackReader {
  const uint8_t* p;
  size_t n, pos = 0;
  size_t integer(int prefix) {
    if (pos >= n) throw ProtocolError{COMPRESSION_ERROR, "HPACK: truncated integer"};
    const size_t max = (size_t(1) << prefix) - 1;
    size_t v = p[pos++] & max;
    if (v < max) return v;
    for (int shift = 0; shift <= 28; shift += 7) {
      if (pos >= n) throw ProtocolError{COMPRESSION_ERROR, "HPACK: truncated integer"};
      const uint8_t b = p[pos++];
      v += size_t(b & 127) << shift;
      if (!(b & 128)) {
        if (v > 0x7fffffff) break;
        return v;
      }
    }
    throw ProtocolError{COMPRESSION_ERROR, "HPACK: integer too large"};
  }
  std::string string() {
    if (pos >= n) throw ProtocolError{COMPRESSION_ERROR, "HPACK: truncated string"};
    if (p[pos] & 0x80) throw ProtocolError{COMPRESSION_ERROR, "HPACK: Huffman-coded strings are not accepted"};
    const size_t len = integer(7);
    if (len > n - pos) throw ProtocolError{COMPRESSION_ERROR, "HPACK: string longer than the header block"};
    std::string s(reinterpret_cast<const char*>(p + pos), len);
    pos += len;
    return s;
  }
};

// A host as getaddrinfo wants it: "[::1]" → "::1".
std::string unbracket(const std::string& host) {
  return host.size() > 2 && host.front() == '[' && host.back() == ']' ? host.substr(1, host.size() - 2) : host;
}

}  // namespace

std::string encode_headers(const Fields& fields) {
  std::string out;
  for (auto& [name, value] : fields) {
    out.push_back(0);
    hpack_int(out, 0, 7, name.size());
    out += name;
    hpack_int(out, 0, 7, value.size());
    out += value;
  }
  return out;
}

void free_body(Event& e) {
  if (e.body != nullptr) pool_give(e.body, e.len);
  e.body = nullptr;
}

// ---- Conn ------------------------------------------------------------------------------------

struct Conn::Stream {
  uint32_t id;
  int64_t send_window;
  int64_t recv_window;
  uint64_t recv_pending = 0;
  bool remote_ended = false;
  bool failed = false;
  // gRPC message being received.
  uint8_t prefix[5] = {};
  size_t prefix_have = 0;
  uint8_t* body = nullptr;
  size_t body_len = 0, body_have = 0;
  ~Stream() {
    if (body != nullptr) pool_give(body, body_len);
  }
};

struct Conn::Item {
  bool is_data = false;
  uint32_t stream = 0;
  std::string frame;  // !is_data: a whole frame
  std::vector<Seg> segs;
  std::string owned;
  uint64_t token = 0;
  bool end_stream = false;
  size_t total = 0, sent = 0;
};

Conn::Conn(uint64_t id, Config cfg, Sink sink) : id_(id), cfg_(cfg), sink_(std::move(sink)) {}

Conn::~Conn() { close(); }

// `first_frames` (the client preface and/or our SETTINGS) go out first, then our connection window.
void Conn::launch(std::string first_frames, std::string host, int port) {
  if (cfg_.recv_window > kDefaultWindow) first_frames += window_update(0, cfg_.recv_window - kDefaultWindow);
  ctrl_.push_back(std::move(first_frames));
  conn_recv_window_ = cfg_.recv_window;
  reader_ = std::thread(&Conn::reader_main, this, std::move(host), port);
  writer_ = std::thread(&Conn::writer_main, this);
}

void Conn::start_client(const std::string& host, int port) {
  st_ = St::kHead;
  launch(std::string(kPreface, kPrefaceLen) +
             settings_frame({{ENABLE_PUSH, 0}, {INITIAL_WINDOW_SIZE, cfg_.recv_window}, {MAX_FRAME_SIZE, cfg_.max_frame}}),
         host, port);
}

void Conn::start_server(int fd) {
  fd_ = fd;
  connected_ = true;
  st_ = St::kPreface;
  launch(settings_frame({{MAX_CONCURRENT_STREAMS, cfg_.max_streams},
                         {INITIAL_WINDOW_SIZE, cfg_.recv_window},
                         {MAX_FRAME_SIZE, cfg_.max_frame},
                         {MAX_HEADER_LIST_SIZE, uint32_t(kMaxHeaderList)}}),
         std::string(), 0);
}

std::shared_ptr<Conn::Stream> Conn::open_stream_locked(uint32_t id) {
  auto st = std::make_shared<Stream>();
  st->id = id;
  st->send_window = peer_initial_window_;
  st->recv_window = cfg_.recv_window;
  streams_[id] = st;
  return st;
}

Event Conn::event(Event::Kind kind, uint32_t stream) const {
  Event e;
  e.kind = kind;
  e.conn = id_;
  e.stream = stream;
  return e;
}

bool Conn::queue_item(std::unique_ptr<Item> item) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (over_ || close_after_flush_) {
      if (item->token != 0) written_.push_back(item->token);
      return false;
    }
    // Client: HEADERS on a new stream opens it.
    if (!cfg_.server && !item->is_data && streams_.find(item->stream) == streams_.end() && item->stream != 0)
      open_stream_locked(item->stream);
    out_.push_back(std::move(item));
  }
  write_inline();
  return true;
}

bool Conn::headers(uint32_t stream, const Fields& fields, bool end_stream) {
  auto it = std::make_unique<Item>();
  it->stream = stream;
  it->frame = frame(HEADERS, uint8_t(END_HEADERS | (end_stream ? END_STREAM : 0)), stream, encode_headers(fields));
  it->end_stream = end_stream;
  return queue_item(std::move(it));
}

bool Conn::data(uint32_t stream, std::vector<Seg> segs, std::string owned, uint64_t token, bool end_stream) {
  auto it = std::make_unique<Item>();
  it->is_data = true;
  it->stream = stream;
  it->segs = std::move(segs);
  it->owned = std::move(owned);
  it->token = token;
  it->end_stream = end_stream;
  for (auto& s : it->segs) it->total += s.n;
  it->total += it->owned.size();
  return queue_item(std::move(it));
}

bool Conn::rst(uint32_t stream, uint32_t code) {
  auto it = std::make_unique<Item>();
  it->stream = stream;
  it->frame = rst_frame(stream, code);
  it->end_stream = true;
  return queue_item(std::move(it));
}

bool Conn::is_written(uint64_t token) {
  std::lock_guard<std::mutex> lk(mu_);
  return !over_ && std::find(written_.begin(), written_.end(), token) != written_.end();
}

std::vector<uint64_t> Conn::take_written() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<uint64_t> out;
  out.swap(written_);
  return out;
}

void Conn::drop_stream_frames_locked() {
  for (auto& it : out_)
    if (it->token != 0) written_.push_back(it->token);
  out_.clear();
}

void Conn::drop_queue_locked() {
  drop_stream_frames_locked();
  ctrl_.clear();
}

void Conn::close() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closing_ && !reader_.joinable() && !writer_.joinable()) return;
    closing_ = true;
    over_ = true;
  }
  cv_.notify_all();
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
  if (writer_.joinable()) writer_.join();
  std::lock_guard<std::mutex> lk(mu_);
  drop_queue_locked();
  streams_.clear();
  data_stream_.reset();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void Conn::queue_ctrl(std::string f) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (over_) return;
    ctrl_.push_back(std::move(f));
  }
  write_inline();
}

// Writes `f`'s remaining bytes. Blocking: waits (in slices, watching closing_) until all are
// written; false when the socket failed or we are closing. Non-blocking: writes what the socket
// takes now and returns true with the rest left in `f`.
bool Conn::write_frame(Frame& f, bool blocking) {
  while (f.first < f.segs.size()) {
    iovec iov[64];
    size_t k = 0;
    for (size_t i = f.first; i < f.segs.size() && k < 64; i++) iov[k++] = {const_cast<uint8_t*>(f.segs[i].p), f.segs[i].n};
    msghdr mh{};
    mh.msg_iov = iov;
    mh.msg_iovlen = k;
    const ssize_t w = ::sendmsg(fd_, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!blocking) return true;
        pollfd pf{fd_, POLLOUT, 0};
        ::poll(&pf, 1, 200);
        std::lock_guard<std::mutex> lk(mu_);
        if (closing_) return false;
        continue;
      }
      return false;
    }
    size_t left = size_t(w);
    while (f.first < f.segs.size() && left >= f.segs[f.first].n) left -= f.segs[f.first++].n;
    if (f.first < f.segs.size()) {
      f.segs[f.first].p += left;
      f.segs[f.first].n -= left;
    }
  }
  return true;
}

// Under mu_: takes the next frame that may be written now into `f`; false when there is none
// (nothing queued, or DATA waiting for window).
bool Conn::next_frame(Frame& f) {
  f = Frame();
  if (!ctrl_.empty()) {
    f.bytes = std::make_unique<std::string>(std::move(ctrl_.front()));
    ctrl_.pop_front();
    f.segs.push_back({reinterpret_cast<const uint8_t*>(f.bytes->data()), f.bytes->size()});
    return true;
  }
  if (close_after_flush_) return false;
  while (!out_.empty()) {
    Item& it = *out_.front();
    auto sit = streams_.find(it.stream);
    if (!it.is_data) {
      f.done = std::move(out_.front());
      out_.pop_front();
      if (f.done->end_stream && sit != streams_.end() && (sit->second->remote_ended || f.done->frame[3] == char(RST_STREAM)))
        streams_.erase(sit);
      f.segs.push_back({reinterpret_cast<const uint8_t*>(f.done->frame.data()), f.done->frame.size()});
      return true;
    }
    if (sit == streams_.end()) {
      // The stream is gone (reset): its data is dropped.
      if (it.token != 0) written_.push_back(it.token);
      out_.pop_front();
      continue;
    }
    Stream& st = *sit->second;
    const size_t left = it.total - it.sent;
    const int64_t room = std::min<int64_t>({int64_t(left), conn_send_window_, st.send_window, int64_t(peer_max_frame_)});
    if (left > 0 && room <= 0) return false;  // a WINDOW_UPDATE or SETTINGS wakes the writer
    const size_t n = size_t(std::max<int64_t>(room, 0));
    const bool last = it.sent + n == it.total;
    f.bytes = std::make_unique<std::string>();
    put_head(*f.bytes, uint32_t(n), DATA, uint8_t(last && it.end_stream ? END_STREAM : 0), it.stream);
    f.segs.push_back({reinterpret_cast<const uint8_t*>(f.bytes->data()), f.bytes->size()});
    size_t off = 0, from = it.sent, want = n;
    auto take = [&](const uint8_t* p, size_t len) {
      if (want == 0) return;
      if (from >= off + len) {
        off += len;
        return;
      }
      const size_t start = from - off, k = std::min(len - start, want);
      f.segs.push_back({p + start, k});
      from += k;
      want -= k;
      off += len;
    };
    for (auto& sg : it.segs) take(sg.p, sg.n);
    take(reinterpret_cast<const uint8_t*>(it.owned.data()), it.owned.size());
    it.sent += n;
    conn_send_window_ -= int64_t(n);
    st.send_window -= int64_t(n);
    if (last) {
      f.done = std::move(out_.front());
      out_.pop_front();
      if (f.done->end_stream && st.remote_ended) streams_.erase(f.done->stream);
    }
    // The frame's bytes stay valid while it is written unlocked: a DATA item that is not done stays
    // at the front of out_ (only the writing side pops), lent spans are held by their token, and
    // f.done holds the last item.
    return true;
  }
  return false;
}

// The caller's thread writes what it can without blocking when no one else is writing (saves the
// writer thread's wake-up on every piece and reply); what the socket does not take now is left to
// the writer thread.
void Conn::write_inline() {
  std::unique_lock<std::mutex> lk(mu_);
  if (writing_ || !connected_ || closing_ || partial_.unwritten()) return;
  writing_ = true;
  Frame f;
  bool woke = false;
  while (next_frame(f)) {
    lk.unlock();
    const bool ok = write_frame(f, false);
    lk.lock();
    if (ok && f.unwritten()) {
      partial_ = std::move(f);
      woke = true;
      break;
    }
    // Written, or the socket failed (the reader reports it): the lent bytes are free either way.
    if (f.done && f.done->token != 0) written_.push_back(f.done->token);
    if (!ok) break;
  }
  writing_ = false;
  lk.unlock();
  if (woke) cv_.notify_all();
}

void Conn::writer_main() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return connected_ || closing_; });
  while (!closing_) {
    if (writing_) {
      cv_.wait(lk);
      continue;
    }
    Frame f;
    if (partial_.unwritten()) {
      f = std::move(partial_);
      partial_ = Frame();
    } else if (!next_frame(f)) {
      if (close_after_flush_ && ctrl_.empty()) break;
      cv_.wait(lk);
      continue;
    }
    writing_ = true;
    lk.unlock();
    const bool ok = write_frame(f, true);
    lk.lock();
    writing_ = false;
    if (f.done && f.done->token != 0) written_.push_back(f.done->token);
    if (!ok) break;
  }
  const bool shut = close_after_flush_ || !closing_;
  over_ = true;
  drop_queue_locked();
  lk.unlock();
  // A broken or finished connection: wake the reader (it reports the close).
  if (shut && fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

bool Conn::connect_to(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string svc = std::to_string(port);
  const int gai = ::getaddrinfo(unbracket(host).c_str(), svc.c_str(), &hints, &res);
  if (gai != 0) {
    finish_reader(-1, "cannot resolve " + host + ": " + gai_strerror(gai));
    return false;
  }
  std::string why = "no address";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg_.establish_ms);
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (closing_) {
        ::close(fd);
        break;
      }
      fd_ = fd;
    }
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      while (true) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) {
          errno = ETIMEDOUT;
          break;
        }
        pollfd pf{fd, POLLOUT, 0};
        const int pr = ::poll(&pf, 1, int(std::min<long long>(left, 200)));
        {
          std::lock_guard<std::mutex> lk(mu_);
          if (closing_) {
            errno = ECANCELED;
            break;
          }
        }
        if (pr > 0) {
          int err = 0;
          socklen_t len = sizeof(err);
          ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          errno = err;
          rc = err == 0 ? 0 : -1;
          break;
        }
      }
    }
    if (rc == 0) {
      ::freeaddrinfo(res);
      const int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      {
        std::lock_guard<std::mutex> lk(mu_);
        connected_ = true;
      }
      cv_.notify_all();
      return true;
    }
    why = std::strerror(errno);
    std::lock_guard<std::mutex> lk(mu_);
    fd_ = -1;
    ::close(fd);
  }
  ::freeaddrinfo(res);
  finish_reader(-1, "cannot connect to " + host + ":" + svc + ": " + why);
  return false;
}

void Conn::finish_reader(int64_t code, const std::string& why) {
  if (reader_done_) return;
  reader_done_ = true;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!close_after_flush_) over_ = true;
  }
  cv_.notify_all();
  Event e = event(Event::kClosed);
  e.code = code;
  e.text = why;
  sink_(std::move(e));
}

void Conn::protocol_error(uint32_t code, const std::string& why) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!over_) {
      ctrl_.push_back(goaway_frame(last_stream_, code, why));
      close_after_flush_ = true;
      drop_stream_frames_locked();  // nothing else is written after the GOAWAY
    }
  }
  cv_.notify_all();
  finish_reader(code, why);
}

size_t Conn::direct_room(uint8_t** dst) {
  if (st_ != St::kData || data_left_ == 0 || !data_stream_) return 0;
  Stream& s = *data_stream_;
  if (s.failed || s.body == nullptr || s.body_have >= s.body_len) return 0;
  *dst = s.body + s.body_have;
  return std::min(data_left_, s.body_len - s.body_have);
}

void Conn::direct_done(size_t n) {
  Stream& s = *data_stream_;
  s.body_have += n;
  data_left_ -= n;
  if (s.body_have == s.body_len) emit_message(s);
  if (data_left_ == 0) {
    data_end();
    st_ = St::kHead;
  }
}

void Conn::reader_main(std::string host, int port) {
  if (!cfg_.server && !connect_to(host, port)) return;
  std::vector<uint8_t> buf(kReadBuffer);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(cfg_.establish_ms);
  // Until the handshake is done the socket is polled (its deadline); after it, reads block (close()
  // shuts the socket down to end them) and a message body is read whole with MSG_WAITALL: one call
  // instead of a poll and a read per arriving chunk. Writes use MSG_DONTWAIT either way.
  bool blocking = false;
  try {
    while (!reader_done_) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (closing_) break;
      }
      const bool waiting = cfg_.server ? st_ == St::kPreface : !established_.load();
      if (waiting) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) {
          finish_reader(-1, cfg_.server ? "no client preface within " + std::to_string(cfg_.establish_ms) + " ms"
                                         : "the peer's listener did not answer within " + std::to_string(cfg_.establish_ms) + " ms");
          break;
        }
        pollfd pf{fd_, POLLIN, 0};
        const int pr = ::poll(&pf, 1, int(std::min<long long>(left, 1000)));
        if (pr < 0 && errno != EINTR) {
          finish_reader(-1, std::string("poll: ") + std::strerror(errno));
          break;
        }
        if (pr <= 0) continue;
      } else if (!blocking) {
        const int fl = ::fcntl(fd_, F_GETFL);
        if (fl >= 0) ::fcntl(fd_, F_SETFL, fl & ~O_NONBLOCK);
        blocking = true;
      }
      uint8_t* dst = nullptr;
      const size_t room = direct_room(&dst);
      const ssize_t n = room > 0 ? ::recv(fd_, dst, room, blocking ? MSG_WAITALL : 0) : ::recv(fd_, buf.data(), buf.size(), 0);
      if (n > 0) {
        if (room > 0)
          direct_done(size_t(n));
        else
          process(buf.data(), size_t(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      finish_reader(-1, n == 0 ? "connection closed by the peer" : std::string("read: ") + std::strerror(errno));
      break;
    }
  } catch (const ProtocolError& e) {
    protocol_error(e.code, e.why);
  } catch (const std::exception& e) {
    protocol_error(INTERNAL_ERROR, e.what());
  }
  finish_reader(-1, "connection closed");
}

void Conn::process(const uint8_t* p, size_t n) {
  while (n > 0 && !reader_done_) {
    switch (st_) {
      case St::kPreface: {
        const size_t k = std::min(n, kPrefaceLen - preface_have_);
        if (std::memcmp(p, kPreface + preface_have_, k) != 0) {
          finish_reader(-1, "not an HTTP/2 client preface");
          ::shutdown(fd_, SHUT_RDWR);
          return;
        }
        preface_have_ += k;
        p += k;
        n -= k;
        if (preface_have_ == kPrefaceLen) st_ = St::kHead;
        break;
      }
      case St::kHead: {
        const size_t k = std::min(n, size_t(9) - head_have_);
        std::memcpy(head_ + head_have_, p, k);
        head_have_ += k;
        p += k;
        n -= k;
        if (head_have_ == 9) {
          head_have_ = 0;
          begin_frame();
        }
        break;
      }
      case St::kPayload: {
        const size_t k = std::min(n, size_t(flen_) - payload_.size());
        payload_.append(reinterpret_cast<const char*>(p), k);
        p += k;
        n -= k;
        if (payload_.size() == flen_) {
          st_ = St::kHead;
          on_frame();
        }
        break;
      }
      case St::kData: {
        const size_t k = std::min(n, data_left_);
        data_bytes(p, k);
        data_left_ -= k;
        p += k;
        n -= k;
        if (data_left_ == 0) {
          st_ = St::kHead;
          data_end();
        }
        break;
      }
    }
  }
}

void Conn::begin_frame() {
  flen_ = (uint32_t(head_[0]) << 16) | (uint32_t(head_[1]) << 8) | head_[2];
  ftype_ = head_[3];
  fflags_ = head_[4];
  fsid_ = get_u32(head_ + 5) & 0x7fffffff;
  if (flen_ > cfg_.max_frame) throw ProtocolError{FRAME_SIZE_ERROR, "frame of " + std::to_string(flen_) + " bytes exceeds SETTINGS_MAX_FRAME_SIZE " + std::to_string(cfg_.max_frame)};
  if (ftype_ == DATA) {
    data_begin();
    data_left_ = flen_;
    if (flen_ == 0) {
      data_end();
      st_ = St::kHead;
    } else {
      st_ = St::kData;
    }
    return;
  }
  if (flen_ > kMaxControlFrame) throw ProtocolError{FRAME_SIZE_ERROR, "frame of type " + std::to_string(ftype_) + " and " + std::to_string(flen_) + " bytes exceeds " + std::to_string(kMaxControlFrame)};
  payload_.clear();
  if (flen_ == 0) {
    st_ = St::kHead;
    on_frame();
  } else {
    st_ = St::kPayload;
  }
}

void Conn::data_begin() {
  if (fsid_ == 0) throw ProtocolError{PROTOCOL_ERROR, "DATA on stream 0"};
  if (fflags_ & PADDED) throw ProtocolError{PROTOCOL_ERROR, "padded DATA frames are not accepted"};
  if (int64_t(flen_) > conn_recv_window_) throw ProtocolError{FLOW_CONTROL_ERROR, "DATA of " + std::to_string(flen_) + " bytes exceeds the connection window " + std::to_string(conn_recv_window_)};
  conn_recv_window_ -= flen_;
  std::lock_guard<std::mutex> lk(mu_);
  auto it = streams_.find(fsid_);
  data_stream_.reset();
  if (it == streams_.end() || it->second->remote_ended) {
    const bool idle = cfg_.server ? fsid_ > last_stream_ : it == streams_.end() && fsid_ > 1;
    if (idle) throw ProtocolError{PROTOCOL_ERROR, "DATA on idle stream " + std::to_string(fsid_)};
    return;  // a stream we ended or reset: dropped (the connection window is still given back)
  }
  Stream& st = *it->second;
  if (int64_t(flen_) > st.recv_window) throw ProtocolError{FLOW_CONTROL_ERROR, "DATA of " + std::to_string(flen_) + " bytes exceeds stream " + std::to_string(fsid_) + "'s window " + std::to_string(st.recv_window)};
  st.recv_window -= flen_;
  data_stream_ = it->second;
}

void Conn::stream_error(Stream& st, const std::string& why) {
  st.failed = true;
  if (st.body != nullptr) pool_give(st.body, st.body_len);
  st.body = nullptr;
  Event e = event(Event::kStreamError, st.id);
  e.text = why;
  sink_(std::move(e));
}

void Conn::emit_message(Stream& st) {
  Event e = event(Event::kMessage, st.id);
  e.body = st.body;
  e.len = st.body_len;
  st.body = nullptr;
  st.body_len = st.body_have = 0;
  sink_(std::move(e));
}

void Conn::data_bytes(const uint8_t* p, size_t n) {
  if (!data_stream_) return;
  Stream& st = *data_stream_;
  while (n > 0 && !st.failed) {
    if (st.body == nullptr) {
      const size_t k = std::min(n, size_t(5) - st.prefix_have);
      std::memcpy(st.prefix + st.prefix_have, p, k);
      st.prefix_have += k;
      p += k;
      n -= k;
      if (st.prefix_have < 5) return;
      st.prefix_have = 0;
      const uint32_t len = get_u32(st.prefix + 1);
      if (st.prefix[0] != 0) return stream_error(st, "compressed gRPC messages are not accepted (flag " + std::to_string(st.prefix[0]) + "); send with compression off");
      if (len > cfg_.max_message) return stream_error(st, "gRPC message of " + std::to_string(len) + " bytes exceeds the limit of " + std::to_string(cfg_.max_message));
      if (len == 0) {
        emit_message(st);
        continue;
      }
      st.body = static_cast<uint8_t*>(pool_take(len));
      if (st.body == nullptr) return stream_error(st, "out of memory for a gRPC message of " + std::to_string(len) + " bytes");
      st.body_len = len;
      st.body_have = 0;
      continue;
    }
    const size_t k = std::min(n, st.body_len - st.body_have);
    std::memcpy(st.body + st.body_have, p, k);
    st.body_have += k;
    p += k;
    n -= k;
    if (st.body_have == st.body_len) emit_message(st);
  }
}

void Conn::data_end() {
  conn_recv_pending_ += flen_;
  std::string updates;
  if (conn_recv_pending_ >= cfg_.window_batch) {
    updates += window_update(0, uint32_t(conn_recv_pending_));
    conn_recv_window_ += int64_t(conn_recv_pending_);
    conn_recv_pending_ = 0;
  }
  std::shared_ptr<Stream> sp = std::move(data_stream_);
  if (sp) {
    Stream& st = *sp;
    if (fflags_ & END_STREAM) {
      Event e = event(Event::kStreamEnd, st.id);
      e.flag = st.prefix_have != 0 || st.body != nullptr;
      {
        std::lock_guard<std::mutex> lk(mu_);
        st.remote_ended = true;
      }
      sink_(std::move(e));
    } else {
      st.recv_pending += flen_;
      if (st.recv_pending >= cfg_.window_batch) {
        updates += window_update(st.id, uint32_t(st.recv_pending));
        st.recv_window += int64_t(st.recv_pending);
        st.recv_pending = 0;
      }
    }
  }
  if (!updates.empty()) queue_ctrl(std::move(updates));
}

void Conn::on_settings() {
  if (fsid_ != 0) throw ProtocolError{PROTOCOL_ERROR, "SETTINGS on a stream"};
  if (fflags_ & ACK) {
    if (flen_ != 0) throw ProtocolError{FRAME_SIZE_ERROR, "SETTINGS ACK with a payload"};
    return;
  }
  if (flen_ % 6 != 0) throw ProtocolError{FRAME_SIZE_ERROR, "SETTINGS of " + std::to_string(flen_) + " bytes"};
  const auto* p = reinterpret_cast<const uint8_t*>(payload_.data());
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (size_t i = 0; i < flen_; i += 6) {
      const uint16_t id = uint16_t((p[i] << 8) | p[i + 1]);
      const uint32_t v = get_u32(p + i + 2);
      if (id == INITIAL_WINDOW_SIZE) {
        if (v > kMaxWindow) throw ProtocolError{FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1"};
        const int64_t delta = int64_t(v) - peer_initial_window_;
        peer_initial_window_ = v;
        for (auto& [sid, st] : streams_) {
          st->send_window += delta;
          if (st->send_window > kMaxWindow) throw ProtocolError{FLOW_CONTROL_ERROR, "stream window above 2^31-1"};
        }
      } else if (id == MAX_FRAME_SIZE) {
        if (v < 16384 || v > (1u << 24) - 1) throw ProtocolError{PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE " + std::to_string(v) + " out of range"};
        peer_max_frame_ = v;
      } else if (id == ENABLE_PUSH && v > 1) {
        throw ProtocolError{PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1"};
      }
    }
    ctrl_.push_back(frame(SETTINGS, ACK, 0));
  }
  cv_.notify_all();
  if (!cfg_.server && !established_.exchange(true)) {
    sink_(event(Event::kEstablished));
  }
}

// Drops the oldest HPACK dynamic-table entries until the table holds at most `limit` bytes.
void Conn::evict_dyn(size_t limit) {
  while (!dyn_.empty() && dyn_size_ > limit) {
    dyn_size_ -= dyn_.back().first.size() + dyn_.back().second.size() + 32;
    dyn_.pop_back();
  }
}

void Conn::on_headers() {
  if (fsid_ == 0) throw ProtocolError{PROTOCOL_ERROR, "HEADERS on stream 0"};
  if (!(fflags_ & END_HEADERS)) throw ProtocolError{PROTOCOL_ERROR, "CONTINUATION frames are not accepted"};
  const auto* p = reinterpret_cast<const uint8_t*>(payload_.data());
  size_t begin = 0, end = flen_;
  if (fflags_ & PADDED) {
    if (flen_ < 1 || p[0] >= flen_) throw ProtocolError{PROTOCOL_ERROR, "HEADERS padding longer than the frame"};
    end -= p[0];
    begin = 1;
  }
  if (fflags_ & PRIORITY_FLAG) begin += 5;
  if (begin > end) throw ProtocolError{FRAME_SIZE_ERROR, "HEADERS frame too short"};
  // HPACK decode: indexed fields, literals with/without/never indexing, table size updates.
  HpackReader r{p + begin, end - begin};
  Fields fields;
  size_t list = 0;
  auto lookup = [&](size_t idx) -> std::pair<std::string, std::string> {
    if (idx == 0) throw ProtocolError{COMPRESSION_ERROR, "HPACK: index 0"};
    if (idx <= 61) return {kStatic[idx - 1][0], kStatic[idx - 1][1]};
    if (idx - 62 >= dyn_.size()) throw ProtocolError{COMPRESSION_ERROR, "HPACK: index " + std::to_string(idx) + " out of range"};
    return dyn_[idx - 62];
  };
  while (r.pos < r.n) {
    const uint8_t b = r.p[r.pos];
    std::pair<std::string, std::string> f;
    if (b & 0x80) {
      f = lookup(r.integer(7));
    } else if ((b & 0xe0) == 0x20) {
      const size_t size = r.integer(5);
      if (size > 4096) throw ProtocolError{COMPRESSION_ERROR, "HPACK: table size above 4096"};
      dyn_max_ = size;
      evict_dyn(dyn_max_);
      continue;
    } else {
      const bool index = (b & 0xc0) == 0x40;
      const size_t name_idx = r.integer(index ? 6 : 4);
      f.first = name_idx == 0 ? r.string() : lookup(name_idx).first;
      f.second = r.string();
      if (index) {
        const size_t sz = f.first.size() + f.second.size() + 32;
        evict_dyn(sz <= dyn_max_ ? dyn_max_ - sz : 0);
        if (sz <= dyn_max_) {
          dyn_.push_front(f);
          dyn_size_ += sz;
        }
      }
    }
    list += f.first.size() + f.second.size() + 32;
    if (list > kMaxHeaderList) throw ProtocolError{PROTOCOL_ERROR, "header list above " + std::to_string(kMaxHeaderList) + " bytes"};
    fields.push_back(std::move(f));
  }
  const bool end_stream = fflags_ & END_STREAM;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = streams_.find(fsid_);
    if (cfg_.server && it == streams_.end()) {
      if (fsid_ % 2 == 0) throw ProtocolError{PROTOCOL_ERROR, "HEADERS on even stream " + std::to_string(fsid_)};
      if (fsid_ <= last_stream_) throw ProtocolError{STREAM_CLOSED, "HEADERS on closed stream " + std::to_string(fsid_)};
      last_stream_ = fsid_;
      if (streams_.size() >= cfg_.max_streams) {
        ctrl_.push_back(rst_frame(fsid_, REFUSED_STREAM));
        cv_.notify_all();
        return;
      }
      open_stream_locked(fsid_)->remote_ended = end_stream;
    } else if (it == streams_.end()) {
      return;  // client: a stream we reset
    } else if (end_stream) {
      it->second->remote_ended = true;
    }
  }
  Event e = event(Event::kHeaders, fsid_);
  e.fields = std::move(fields);
  e.flag = end_stream;
  sink_(std::move(e));
}

void Conn::on_frame() {
  const auto* p = reinterpret_cast<const uint8_t*>(payload_.data());
  switch (ftype_) {
    case SETTINGS:
      return on_settings();
    case PING:
      if (flen_ != 8 || fsid_ != 0) throw ProtocolError{FRAME_SIZE_ERROR, "PING of " + std::to_string(flen_) + " bytes"};
      if (!(fflags_ & ACK)) queue_ctrl(frame(PING, ACK, 0, payload_));
      return;
    case WINDOW_UPDATE: {
      if (flen_ != 4) throw ProtocolError{FRAME_SIZE_ERROR, "WINDOW_UPDATE of " + std::to_string(flen_) + " bytes"};
      const uint32_t inc = get_u32(p) & 0x7fffffff;
      if (inc == 0) throw ProtocolError{PROTOCOL_ERROR, "WINDOW_UPDATE of 0"};
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (fsid_ == 0) {
          conn_send_window_ += inc;
          if (conn_send_window_ > kMaxWindow) throw ProtocolError{FLOW_CONTROL_ERROR, "connection window above 2^31-1"};
        } else {
          auto it = streams_.find(fsid_);
          if (it != streams_.end()) {
            it->second->send_window += inc;
            if (it->second->send_window > kMaxWindow) throw ProtocolError{FLOW_CONTROL_ERROR, "stream window above 2^31-1"};
          }
        }
      }
      cv_.notify_all();
      return;
    }
    case HEADERS:
      return on_headers();
    case RST_STREAM: {
      if (flen_ != 4) throw ProtocolError{FRAME_SIZE_ERROR, "RST_STREAM of " + std::to_string(flen_) + " bytes"};
      if (fsid_ == 0) throw ProtocolError{PROTOCOL_ERROR, "RST_STREAM on stream 0"};
      bool known;
      {
        std::lock_guard<std::mutex> lk(mu_);
        known = streams_.erase(fsid_) > 0;
      }
      cv_.notify_all();
      if (!known) return;
      Event e = event(Event::kReset, fsid_);
      e.code = get_u32(p);
      sink_(std::move(e));
      return;
    }
    case GOAWAY: {
      if (flen_ < 8 || fsid_ != 0) throw ProtocolError{FRAME_SIZE_ERROR, "GOAWAY of " + std::to_string(flen_) + " bytes"};
      const uint32_t code = get_u32(p + 4);
      std::string why = "the peer sent GOAWAY (code " + std::to_string(code) + ")";
      if (flen_ > 8) why += ": " + payload_.substr(8, 200);
      finish_reader(code, why);
      return;
    }
    case PUSH_PROMISE:
      throw ProtocolError{PROTOCOL_ERROR, "PUSH_PROMISE is not accepted"};
    case CONTINUATION:
      throw ProtocolError{PROTOCOL_ERROR, "CONTINUATION frames are not accepted"};
    default:
      return;  // PRIORITY and unknown types are ignored
  }
}

// ---- Listener --------------------------------------------------------------------------------

Listener::Listener(Config cfg, Sink sink) : cfg_(cfg), sink_(std::move(sink)) {}

Listener::~Listener() { close(); }

int Listener::listen(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  const int gai = ::getaddrinfo(unbracket(host).c_str(), "0", &hints, &res);
  if (gai != 0) throw std::runtime_error("cannot resolve " + host + ": " + gai_strerror(gai));
  std::string why = "no address";
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    // Non-blocking: accept4 after poll must not block if the connection went away in between
    // (close() joins the accepting thread).
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof(ss);
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
      const int port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                                : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
      ::freeaddrinfo(res);
      fd_ = fd;
      accepter_ = std::thread(&Listener::accept_main, this);
      return port;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  throw std::runtime_error("cannot listen on " + host + ": " + why);
}

void Listener::accept_main() {
  while (!closing_.load()) {
    pollfd pf{fd_, POLLIN, 0};
    if (::poll(&pf, 1, 200) <= 0) continue;
    const int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    std::lock_guard<std::mutex> lk(mu_);
    if (closing_.load() || conns_.size() >= kMaxConnections) {
      ::close(fd);
      continue;
    }
    const uint64_t id = next_id_++;
    auto c = std::make_shared<Conn>(id, cfg_, sink_);
    conns_[id] = c;
    c->start_server(fd);
  }
}

std::shared_ptr<Conn> Listener::get(uint64_t id) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second;
}

void Listener::release(uint64_t id) {
  std::shared_ptr<Conn> c;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    c = it->second;
    conns_.erase(it);
  }
  c->close();
}

void Listener::close() {
  if (closing_.exchange(true)) return;
  if (accepter_.joinable()) accepter_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  std::map<uint64_t, std::shared_ptr<Conn>> conns;
  {
    std::lock_guard<std::mutex> lk(mu_);
    conns.swap(conns_);
  }
  for (auto& [id, c] : conns) c->close();
}

}  // namespace lasp::h2
