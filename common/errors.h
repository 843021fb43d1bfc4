/*
 * Error codes shared by every part of hermod.
 *
 * A function that can fail returns an int: 0 (or a count) on success, a negative errno on failure
 * (-ENOMEM, -EPROTO, ...). libuv's codes are negative errno values on Unix and pass through
 * unchanged. Failures that errno has no word for are project codes, all <= -5000, declared once in
 * HM_ERRNO_MAP below; hm_strerror() names every code of either kind. Foreign errors (nng's
 * positive codes, llhttp's HPE_*, a NULL from cJSON or msgpack) are converted where they enter.
 */
#ifndef HM_COMMON_ERRORS_H
#define HM_COMMON_ERRORS_H

/* XX(name, value, message) */
#define HM_ERRNO_MAP(XX)                                                                           \
	/* wire protocol (proto/) */                                                               \
	XX(ETRUNC, -5001, "message truncated")                                                     \
	XX(ETYPE, -5002, "field has the wrong type")                                               \
	XX(ERANGE, -5003, "field out of range")                                                    \
	XX(ETOOBIG, -5004, "message or field too large")                                           \
	XX(EUNKNOWN, -5005, "unknown message type")                                                \
	XX(EVERSION, -5006, "message from a newer schema version")                                 \
	XX(ETRAILING, -5007, "trailing bytes after message")                                       \
	XX(EARITY, -5008, "wrong number of fields")                                                \
	/* names and addresses (common/model.c) */                                                 \
	XX(EAPPNAME, -5020, "invalid app name")                                                    \
	XX(EDYNONAME, -5021, "invalid dyno name")                                                  \
	XX(EHOSTNAME, -5022, "invalid hostname")                                                   \
	XX(EADDR, -5023, "invalid dyno address (want IPv4:PORT or [IPv6]:PORT)")                   \
	XX(ESTATE, -5024, "invalid dyno state")                                                    \
	XX(EBALANCE, -5025, "invalid balance mode")                                                \
	XX(EOP, -5026, "invalid change operation")                                                 \
	XX(ECONTROL, -5027, "holds NUL or a control character")                                    \
	XX(ESECRET, -5028, "invalid secret (name [a-z][a-z0-9-]{0,30}, 1 to 128 bytes)")           \
	XX(ECERT, -5029, "invalid certificate (empty or oversized PEM)")                           \
	/* routing state (common/table_*.c) */                                                     \
	XX(ENOAPP, -5040, "no such app")                                                           \
	XX(ENODOMAIN, -5041, "no such domain")                                                     \
	XX(ENODYNO, -5042, "no such dyno")                                                         \
	XX(EFULL, -5043, "routing table is full")                                                  \
	XX(EBADTABLE, -5044, "routing table file is invalid")                                      \
	XX(ENOTABLE, -5045, "no routing table yet")                                                \
	XX(ENOHOST, -5046, "no app for this host")                                                 \
	XX(EBUSYTABLE, -5047, "routing table is changing too fast to read")                        \
	XX(EUNTRUSTED, -5048, "file is not owned by this user or root, or others may write it")    \
	XX(ENOSECRET, -5049, "no such secret")                                                     \
	XX(ESECRETS, -5050, "no room for another secret")                                          \
	XX(ENOCERT, -5051, "no such certificate")                                                  \
	XX(ECERTREFUSED, -5052, "certificate refused")                                             \
	/* state synchronization (syncd/) */                                                       \
	XX(EEPOCH, -5060, "epoch mismatch")                                                        \
	XX(EGAP, -5061, "sequence gap")                                                            \
	XX(EDIGEST, -5062, "digest mismatch")                                                      \
	XX(ECORRUPT, -5063, "record checksum mismatch")                                            \
	XX(ENNG, -5064, "messaging library error")                                                 \
	XX(ESNAPSHOT, -5065, "snapshot no longer available")                                       \
	XX(ETLS, -5066, "TLS certificate or handshake failure")                                    \
	/* configuration and input (common/opts.c, hermodctl) */                                   \
	XX(EOPTION, -5080, "invalid option")                                                       \
	XX(EJSON, -5081, "invalid JSON")                                                           \
	XX(EUSAGE, -5082, "invalid usage")                                                         \
	/* etcd (syncd/etcd.c) */                                                                  \
	XX(ECOMPACTED, -5100, "etcd revision compacted")                                           \
	XX(EETCD, -5101, "etcd refused the request")                                               \
	XX(EETCDTLS, -5102, "TLS with etcd failed (certificate or handshake)")                     \
	XX(ECONFLICT, -5103, "another origin took that sequence number first")                     \
	XX(ESTORE, -5104, "the store cannot commit (etcd unreachable or without quorum)")

enum hm_errno {
#define HM_ERRNO_ENUM(name, value, msg) HM_##name = (value),
	HM_ERRNO_MAP(HM_ERRNO_ENUM)
#undef HM_ERRNO_ENUM
	    HM_ERRNO_MIN_ = -5000
};

/*
 * Returns a static, human-readable message for err: a project code, a negative errno, or 0
 * ("ok"). Never NULL; an unknown code gives "unknown error". Thread-safe.
 */
const char *hm_strerror(int err);

/* Returns the symbolic name of err ("ENOAPP", "ECONNREFUSED"), or "EUNKNOWN_CODE". */
const char *hm_errname(int err);

#endif
