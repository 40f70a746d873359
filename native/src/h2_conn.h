// HTTP/2 connections on threads of their own, for the peer transport 'native'
// (worker/collectives/native-peer-*.ts). The same wire protocol as the 'raw' transport
// (worker/collectives/raw-h2.ts): HTTP/2 frames carrying gRPC length-prefixed messages, so a native
// endpoint and a raw one talk to each other. What moves here is the socket work: a reader thread
// per connection reads the socket, cuts frames and gRPC messages and reads each message body
// straight into a pooled block (buffer_pool.h); frames are written by the thread that queues them
// when no one else is writing (without blocking), the rest by a writer thread, with the peer's
// flow-control windows and frame size honoured. JavaScript sees one event per gRPC message,
// HEADERS, stream end, reset or connection close, and queues frames; it keeps the protobuf decoding,
// the checks and the replies (native-peer-server.ts, native-peer-stream.ts).
//
// Strict like raw-peer-server.ts: the client preface must be exact, HEADERS must fit one frame,
// HPACK without Huffman coding, no padded DATA, every length checked before anything is
// allocated. A protocol violation ends the connection with GOAWAY and a reason; other connections
// and the process are unaffected.
//
// No thread here touches JavaScript: events go out through a Sink (a thread-safe function in
// h2_addon.cc), and bytes the caller lends to data() are referred to only until their token comes
// back from take_written().
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace lasp::h2 {

using Fields = std::vector<std::pair<std::string, std::string>>;

struct Event {
  enum Kind : int {
    kEstablished = 0,  // client: the server's first SETTINGS arrived
    kHeaders = 1,      // fields; flag = END_STREAM
    kMessage = 2,      // one gRPC message body: body/len (a pooled block owned by the event)
    kStreamEnd = 3,    // the peer ended its side of the stream; flag = inside a message
    kReset = 4,        // RST_STREAM from the peer; code
    kStreamError = 5,  // a message on the stream was refused (text); the rest of the stream is dropped
    kClosed = 6,       // the connection is over; code = HTTP/2 error code of a GOAWAY (-1: none); text
  };
  Kind kind = kClosed;
  uint64_t conn = 0;
  uint32_t stream = 0;
  uint8_t* body = nullptr;
  size_t len = 0;
  Fields fields;
  bool flag = false;
  int64_t code = -1;
  std::string text;
};

// Called on connection threads; must not block.
using Sink = std::function<void(Event&&)>;

// Frees an event's body (a pooled block), when the event is dropped instead of delivered.
void free_body(Event& e);

struct Config {
  bool server = false;
  size_t max_message = 4u << 20;       // largest gRPC message accepted
  uint32_t recv_window = 32u << 20;    // our SETTINGS_INITIAL_WINDOW_SIZE and connection window
  uint32_t window_batch = 4u << 20;    // consumed window given back in batches of this
  uint32_t max_frame = (1u << 24) - 1;  // our SETTINGS_MAX_FRAME_SIZE
  uint32_t max_streams = 16;           // server: concurrent streams
  int establish_ms = 5000;             // client: server's SETTINGS; server: client preface
};

// A span of bytes to send.
struct Seg {
  const uint8_t* p;
  size_t n;
};

class Conn {
 public:
  Conn(uint64_t id, Config cfg, Sink sink);
  ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Client: connects in the reader thread (host is a name or a numeric address).
  void start_client(const std::string& host, int port);
  // Server: an accepted socket.
  void start_server(int fd);

  // Queue frames of a stream (any thread; never blocks). False when the connection is over.
  // Client: headers() on a new odd id opens that stream.
  bool headers(uint32_t stream, const Fields& fields, bool end_stream);
  // DATA: `segs` (lent by the caller until `token` comes back from take_written(); 0 = none) and/or
  // `owned` bytes sent after them.
  bool data(uint32_t stream, std::vector<Seg> segs, std::string owned, uint64_t token, bool end_stream);
  bool rst(uint32_t stream, uint32_t code);

  // Stop both threads and close the socket; idempotent. Must not be called on a connection thread.
  void close();
  // Tokens whose bytes are written (or will never be).
  std::vector<uint64_t> take_written();
  // Whether `token`'s bytes are all written (and not yet taken by take_written()).
  bool is_written(uint64_t token);

 private:
  struct Stream;
  struct Item;
  void reader_main(std::string host, int port);
  void writer_main();
  bool connect_to(const std::string& host, int port);
  void process(const uint8_t* p, size_t n);
  void begin_frame();
  void on_frame();
  void data_begin();
  void data_bytes(const uint8_t* p, size_t n);
  void data_end();
  void on_settings();
  void on_headers();
  void stream_error(Stream& st, const std::string& why);
  void emit_message(Stream& st);
  void queue_ctrl(std::string frame);
  void protocol_error(uint32_t code, const std::string& why);
  void finish_reader(int64_t code, const std::string& why);
  struct Frame {
    std::unique_ptr<std::string> bytes;  // frame header or whole control frame (stable address)
    std::vector<Seg> segs;               // what is left to write, from segs[first]
    size_t first = 0;
    std::unique_ptr<Item> done;  // the item this frame completes
    bool unwritten() const { return first < segs.size(); }
  };
  bool write_frame(Frame& f, bool blocking);
  bool next_frame(Frame& f);
  void write_inline();
  void drop_stream_frames_locked();
  void drop_queue_locked();
  bool queue_item(std::unique_ptr<Item> item);
  void launch(std::string first_frames, std::string host, int port);
  std::shared_ptr<Stream> open_stream_locked(uint32_t id);
  Event event(Event::Kind kind, uint32_t stream = 0) const;
  void evict_dyn(size_t limit);
  // Reader thread: room for a direct read into the body of the message being received (0: none),
  // and the bookkeeping after such a read.
  size_t direct_room(uint8_t** dst);
  void direct_done(size_t n);

  const uint64_t id_;
  const Config cfg_;
  const Sink sink_;
  int fd_ = -1;
  std::thread reader_, writer_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = false;
  bool closing_ = false;           // close() called
  bool over_ = false;              // no more frames are accepted
  bool close_after_flush_ = false;  // GOAWAY queued: shut the socket once it is written
  std::deque<std::string> ctrl_;  // connection-level frames, before stream frames
  std::deque<std::unique_ptr<Item>> out_;
  std::vector<uint64_t> written_;
  bool writing_ = false;  // a thread is writing to the socket
  Frame partial_;         // a frame written in part inline, for the writer thread to finish (unwritten())
  std::map<uint32_t, std::shared_ptr<Stream>> streams_;
  int64_t conn_send_window_ = 65535;
  int64_t peer_initial_window_ = 65535;
  uint32_t peer_max_frame_ = 16384;
  std::atomic<bool> established_{false};

  // Reader-thread state.
  enum class St { kPreface, kHead, kPayload, kData } st_ = St::kHead;
  size_t preface_have_ = 0;
  uint8_t head_[9] = {};
  size_t head_have_ = 0;
  uint32_t flen_ = 0, fsid_ = 0;
  uint8_t ftype_ = 0, fflags_ = 0;
  std::string payload_;
  size_t data_left_ = 0;
  std::shared_ptr<Stream> data_stream_;
  int64_t conn_recv_window_ = 65535;
  uint64_t conn_recv_pending_ = 0;
  uint32_t last_stream_ = 0;
  bool reader_done_ = false;
  // HPACK dynamic table (entries the peer added with incremental indexing), newest first.
  std::deque<std::pair<std::string, std::string>> dyn_;
  size_t dyn_size_ = 0, dyn_max_ = 4096;
};

// A listening socket; every accepted connection is a server Conn with the listener's config/sink.
class Listener {
 public:
  Listener(Config cfg, Sink sink);
  ~Listener();
  // Binds host:0 (numeric address or name) and starts accepting; throws std::runtime_error.
  int listen(const std::string& host);
  std::shared_ptr<Conn> get(uint64_t id);
  // Closes and forgets one connection (after its kClosed, or to drop it).
  void release(uint64_t id);
  void close();

 private:
  void accept_main();
  const Config cfg_;
  const Sink sink_;
  int fd_ = -1;
  std::thread accepter_;
  std::atomic<bool> closing_{false};
  std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<Conn>> conns_;
  uint64_t next_id_ = 1;
};

// HPACK encoding of `fields` as literals without indexing, no Huffman (raw-h2.ts encodeHeaders).
std::string encode_headers(const Fields& fields);

}  // namespace lasp::h2
