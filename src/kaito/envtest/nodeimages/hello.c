/* A one-file HTTP peer for a real node's tests, compiled statically so its image needs no base.
 *   hello serve PORT        answer every request with "hello from <hostname>"
 *   hello get HOST PORT PATH  one GET (HOST an address or a name); print the answer's body;
 *                           exit 1 on no answer
 *   hello resolve NAME      print NAME's IPv4 addresses, one a line; exit 1 when it has none
 * Enough to prove that a pod answers on its Service's ClusterIP (or name) from another pod, with
 * no Debian, Python or curl in the image. Names are looked up with the resolver's res_search,
 * which reads the pod's /etc/resolv.conf (nameserver, search list, ndots) as any client does and
 * needs none of glibc's NSS modules, which a static program cannot load. */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int serve(int port) {
    char host[256] = "?";
    gethostname(host, sizeof host - 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY};
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 64) < 0) {
        perror("hello serve");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    printf("hello: serving on :%d as %s\n", port, host);
    fflush(stdout);
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        char buf[4096];
        ssize_t got = read(c, buf, sizeof buf); /* the request; its content does not matter */
        (void)got;
        char body[300], head[200];
        int n = snprintf(body, sizeof body, "hello from %s\n", host);
        int h = snprintf(head, sizeof head,
                         "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", n);
        if (write(c, head, h) == h) {
            ssize_t w = write(c, body, n);
            (void)w;
        }
        close(c);
    }
}

static int be16(const unsigned char *p) { return p[0] << 8 | p[1]; }

/* Up to max IPv4 addresses of name (as the search list expands it) into out; their count, or
 * -1 with the resolver's reason printed. */
static int lookup(const char *name, struct in_addr *out, int max) {
    unsigned char answer[4096];
    if (res_init() != 0) {
        fprintf(stderr, "hello: cannot read /etc/resolv.conf\n");
        return -1;
    }
    int len = res_search(name, ns_c_in, ns_t_a, answer, sizeof answer);
    if (len < 0) {
        fprintf(stderr, "hello: %s: %s\n", name, hstrerror(h_errno));
        return -1;
    }
    /* The answer section after the question (HEADER, then each question's name, type, class);
     * each record: name, type, class, TTL, length, data. */
    const unsigned char *p = answer + NS_HFIXEDSZ, *end = answer + len;
    int questions = be16(answer + 4), records = be16(answer + 6), found = 0, skip;
    for (int i = 0; i < questions; i++) {
        if ((skip = dn_skipname(p, end)) < 0) return -1;
        p += skip + NS_QFIXEDSZ;
    }
    for (int i = 0; i < records && found < max && p < end; i++) {
        if ((skip = dn_skipname(p, end)) < 0 || p + skip + NS_RRFIXEDSZ > end) break;
        p += skip;
        int type = be16(p), rdlen = be16(p + 8);
        p += NS_RRFIXEDSZ;
        if (p + rdlen > end) break;
        if (type == ns_t_a && rdlen == 4) memcpy(&out[found++], p, 4);
        p += rdlen;
    }
    return found;
}

static int resolve(const char *name) {
    struct in_addr addrs[16];
    int n = lookup(name, addrs, 16);
    for (int i = 0; i < n; i++) printf("%s\n", inet_ntoa(addrs[i]));
    return n > 0 ? 0 : 1;
}

static int get(const char *ip, int port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, ip, &addr.sin_addr) != 1 && lookup(ip, &addr.sin_addr, 1) != 1) return 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("hello get");
        return 1;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, ip);
    if (write(fd, req, n) != n) return 1;
    char buf[8192];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(fd, buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
    buf[len] = 0;
    char *body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || body == NULL) {
        fprintf(stderr, "hello get: no HTTP answer\n");
        return 1;
    }
    fputs(body + 4, stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
    if (argc == 5 && strcmp(argv[1], "get") == 0) return get(argv[2], atoi(argv[3]), argv[4]);
    if (argc == 3 && strcmp(argv[1], "resolve") == 0) return resolve(argv[2]);
    fprintf(stderr, "usage: hello serve PORT | hello get HOST PORT PATH | hello resolve NAME\n");
    return 2;
}
