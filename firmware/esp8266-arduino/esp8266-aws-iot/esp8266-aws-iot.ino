// The reference sketch of the original ESP8266 + AWS IoT tutorial, adapted to read the
// project's flash image: a LittleFS image (block size 4096) holding /config.json,
// /cert.der, /private.der and /ca.der, written to the NodeMCU's filesystem area by
// `hil run --board esp8266` (or esptool, see README.md).
//
// Changes from the tutorial's sketch, and why:
// - settings (WiFi, endpoint, NTP server, client id, topics, period, keep-alive) come
//   from /config.json instead of the source, so one binary serves every device;
// - the image is mounted with its own geometry (4096-byte blocks, its own size) at the
//   board's filesystem address, because the core's default LittleFS uses 8192-byte
//   blocks on 4 MB layouts;
// - the clock is set with one SNTP query to the configured server and port (NTPClient
//   only speaks to port 123);
// - BearSSL (X509List / PrivateKey) replaces the removed axTLS load* calls; RSA and
//   P-256 device keys both work;
// - it prints a few more lines in the tutorial's style (banner, config, file sizes, time,
//   subscription, lost connection) that the test rig reads; no secret is ever printed;
// - the tutorial's unnumbered "hello world" publish on connect is gone: every publish is
//   {"message": "hello world #N"}.
// The reconnect loop keeps the tutorial's fixed 5 s delay, which the rig's backoff
// scenario classifies as constant (as AWS Device Advisor would).

#include <ESP8266WiFi.h>
#include <FS.h>
#include <LittleFS.h>
#include <PubSubClient.h>
#include <WiFiUdp.h>
#include <ArduinoJson.h>

#define FIRMWARE_VERSION "0.1.0"

// The flash image's geometry (certs image --size; DESIGN.md section 3).
static const uint32_t IMAGE_BLOCK_SIZE = 4096;
static const uint32_t IMAGE_SIZE = 65536;
static const uint32_t IMAGE_PAGE_SIZE = 256;

// FS_PHYS_ADDR is the filesystem start of the board layout chosen in the IDE/arduino-cli
// (0x200000 for NodeMCU 4MB, FS 2MB): where the rig writes the image.
static fs::FS imageFs = fs::FS(fs::FSImplPtr(new littlefs_impl::LittleFSImpl(
    FS_PHYS_ADDR, IMAGE_SIZE, IMAGE_PAGE_SIZE, IMAGE_BLOCK_SIZE, 5)));

struct Config {
  String ssid;
  String password;
  String host;
  uint16_t port = 8883;
  String ntpHost = "pool.ntp.org";
  uint16_t ntpPort = 123;
  String clientId;
  String pubTopic = "outTopic";
  String subTopic = "inTopic";
  uint32_t periodMs = 2000;
  uint16_t keepaliveS = 60;
  uint8_t qos = 1;
};

Config config;
WiFiUDP ntpUDP;
BearSSL::WiFiClientSecure espClient;
PubSubClient client(espClient);
BearSSL::X509List *cert = nullptr;
BearSSL::X509List *ca = nullptr;
BearSSL::PrivateKey *key = nullptr;

unsigned long lastMsg = 0;
long value = 0;
bool wasConnected = false;
const char *configError = nullptr;

// One SNTP request to the configured server and port (the rig's mock broker serves SNTP
// on a port of its choosing, which NTP libraries with a fixed port 123 cannot reach).
// Returns Unix seconds, 0 on failure.
static uint32_t sntpQuery() {
  static const uint32_t NTP_TO_UNIX = 2208988800UL;
  uint8_t packet[48] = {0};
  packet[0] = 0x23;  // LI 0, version 4, mode 3 (client)
  ntpUDP.begin(0);
  if (!ntpUDP.beginPacket(config.ntpHost.c_str(), config.ntpPort)) {
    return 0;
  }
  ntpUDP.write(packet, sizeof packet);
  ntpUDP.endPacket();
  unsigned long start = millis();
  while (millis() - start < 2000) {
    if (ntpUDP.parsePacket() >= 48) {
      ntpUDP.read(packet, sizeof packet);
      ntpUDP.stop();
      uint32_t seconds = (uint32_t)packet[40] << 24 | (uint32_t)packet[41] << 16 |
                         (uint32_t)packet[42] << 8 | packet[43];
      return seconds > NTP_TO_UNIX ? seconds - NTP_TO_UNIX : 0;
    }
    delay(10);
  }
  ntpUDP.stop();
  return 0;
}

// Read a whole file of the image; empty on failure.
static std::unique_ptr<uint8_t[]> readFile(const char *path, size_t &size) {
  size = 0;
  File file = imageFs.open(path, "r");
  if (!file) {
    return nullptr;
  }
  size = file.size();
  std::unique_ptr<uint8_t[]> data(new uint8_t[size]);
  if (file.read(data.get(), size) != size) {
    size = 0;
    return nullptr;
  }
  file.close();
  return data;
}

static bool loadConfig() {
  size_t size;
  auto json = readFile("/config.json", size);
  if (!json) {
    configError = "Failed to read /config.json";
    return false;
  }
  JsonDocument doc;
  if (deserializeJson(doc, json.get(), size)) {
    configError = "Failed to read /config.json: not JSON";
    return false;
  }
  config.ssid = doc["wifi"]["ssid"] | "";
  config.password = doc["wifi"]["password"] | "";
  config.host = doc["endpoint"]["host"] | "";
  config.port = doc["endpoint"]["port"] | 8883;
  config.ntpHost = doc["ntp"]["host"] | "pool.ntp.org";
  config.ntpPort = doc["ntp"]["port"] | 123;
  config.clientId = doc["client_id"] | "";
  config.pubTopic = doc["pub_topic"] | "outTopic";
  config.subTopic = doc["sub_topic"] | "inTopic";
  config.periodMs = doc["period_ms"] | 2000;
  config.keepaliveS = doc["keepalive_s"] | 60;
  config.qos = doc["qos"] | 1;
  return true;
}

// After the banner, so the log reads in boot order. Never the WiFi password.
static void printConfig() {
  Serial.printf("Config loaded: endpoint=%s:%u client_id=%s pub=%s sub=%s period_ms=%u "
                "keepalive_s=%u qos=%u\n",
                config.host.c_str(), config.port, config.clientId.c_str(),
                config.pubTopic.c_str(), config.subTopic.c_str(), config.periodMs,
                config.keepaliveS, config.qos);
}

// Load one DER file and report its size only.
static std::unique_ptr<uint8_t[]> loadDer(const char *path, const char *name, size_t &size) {
  auto der = readFile(path, size);
  if (der && size > 0) {
    Serial.printf("%s loaded %u bytes\n", name, (unsigned)size);
  } else {
    Serial.printf("%s not loaded\n", name);
  }
  return der;
}

static bool loadCredentials() {
  size_t certSize, keySize, caSize;
  auto certDer = loadDer("/cert.der", "cert", certSize);
  auto keyDer = loadDer("/private.der", "private key", keySize);
  auto caDer = loadDer("/ca.der", "ca", caSize);
  if (!certDer || !keyDer || !caDer) {
    return false;
  }
  cert = new BearSSL::X509List(certDer.get(), certSize);
  key = new BearSSL::PrivateKey(keyDer.get(), keySize);
  ca = new BearSSL::X509List(caDer.get(), caSize);
  if (key->isRSA()) {
    espClient.setClientRSACert(cert, key);
  } else {
    espClient.setClientECCert(cert, key, BR_KEYTYPE_KEYX | BR_KEYTYPE_SIGN, BR_KEYTYPE_EC);
  }
  espClient.setTrustAnchors(ca);
  return true;
}

void setup_wifi() {
  delay(10);
  Serial.println();
  Serial.print("Connecting to ");
  Serial.println(config.ssid);
  WiFi.mode(WIFI_STA);
  WiFi.begin(config.ssid.c_str(), config.password.c_str());
  while (WiFi.status() != WL_CONNECTED) {
    delay(500);
    Serial.print(".");
  }
  Serial.println("");
  Serial.println("WiFi connected");
  Serial.print("IP address: ");
  Serial.println(WiFi.localIP());
}

void callback(char *topic, byte *payload, unsigned int length) {
  Serial.print("Message arrived [");
  Serial.print(topic);
  Serial.print("] ");
  for (unsigned int i = 0; i < length; i++) {
    Serial.print((char)payload[i]);
  }
  Serial.println();
}

void reconnect() {
  while (!client.connected()) {
    Serial.print("Attempting MQTT connection...");
    if (client.connect(config.clientId.c_str())) {
      Serial.println("connected");
      wasConnected = true;
      if (client.subscribe(config.subTopic.c_str(), config.qos > 0 ? 1 : 0)) {
        Serial.printf("Subscribed to %s qos=%u\n", config.subTopic.c_str(),
                      config.qos > 0 ? 1 : 0);
      }
    } else {
      Serial.print("failed, rc=");
      Serial.print(client.state());
      Serial.println(" try again in 5 seconds");
      char buf[256];
      if (espClient.getLastSSLError(buf, sizeof buf) != 0) {
        Serial.print("WiFiClientSecure SSL error: ");
        Serial.println(buf);
      }
      delay(5000);
    }
  }
}

void setup() {
  Serial.begin(115200);
  Serial.println();
  if (!imageFs.begin()) {
    Serial.println("Failed to mount file system");
  }
  bool configured = loadConfig();
  Serial.printf("esp8266-aws-iot firmware=%s client_id=%s\n", FIRMWARE_VERSION,
                config.clientId.c_str());
  if (!configured) {
    // Nothing to connect to: say why every 5 s rather than crash.
    for (;;) {
      Serial.println(configError);
      delay(5000);
    }
  }
  printConfig();
  loadCredentials();
  setup_wifi();
  uint32_t epoch;
  while ((epoch = sntpQuery()) == 0) {
    Serial.println("Time sync failed, retrying");
    delay(1000);
  }
  espClient.setX509Time(epoch);
  Serial.printf("Time synced: %lu\n", (unsigned long)epoch);
  client.setServer(config.host.c_str(), config.port);
  client.setCallback(callback);
  client.setKeepAlive(config.keepaliveS);
  // A 4 KiB inbound payload with its topic and headers, as the Rust firmware takes.
  client.setBufferSize(5120);
}

void loop() {
  if (!client.connected()) {
    if (wasConnected) {
      Serial.print("MQTT connection lost, rc=");
      Serial.println(client.state());
      wasConnected = false;
    }
    reconnect();
  }
  client.loop();

  unsigned long now = millis();
  if (now - lastMsg > config.periodMs) {
    lastMsg = now;
    ++value;
    char msg[75];
    snprintf(msg, sizeof msg, "{\"message\": \"hello world #%ld\"}", value);
    Serial.print("Publish message: ");
    Serial.println(msg);
    client.publish(config.pubTopic.c_str(), msg);
    Serial.print("Heap: ");
    Serial.println(ESP.getFreeHeap());
  }
}
