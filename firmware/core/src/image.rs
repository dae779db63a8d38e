//! The LittleFS flash image (written below).
