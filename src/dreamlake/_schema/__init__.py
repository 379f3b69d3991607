"""Rules shared by client and server: names, values, parameter keys, log levels, timestamps."""
