/* A one-file HTTP peer for a real node's tests, compiled statically so its image needs no base.
 *   hello serve PORT        answer every request with "hello from <hostname>"
 *   hello get IP PORT PATH  one GET; print the answer's body; exit 1 on no answer
 * Enough to prove that a pod answers on its Service's ClusterIP from another pod, with no
 * Debian, Python or curl in the image. */
#include <arpa/inet.h>
#include <netinet/in.h>
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

static int get(const char *ip, int port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || inet_pton(AF_INET, ip, &addr.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
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
    fprintf(stderr, "usage: hello serve PORT | hello get IP PORT PATH\n");
    return 2;
}
