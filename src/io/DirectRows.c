/*
moescope - io/DirectRows.c
Direct pread of float32 rows whose bytes HDF5 would only copy (see DirectRows.h).

DESIGN: at open, everything that decides whether the stored bytes are exactly the rows
is checked (type, filters, external storage, layout, chunk shape, every chunk present at
its full size and inside the file, no user block, the default sec2 file driver), and the
file offset of every chunk is looked up once. A chunk of c whole rows holds them row-major
(edge chunks are stored at full size), so rows r0..r1 of chunk k are one byte range. A
read splits its rows into one contiguous part per thread; the parts touch disjoint bytes
of the output.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "io/DirectRows.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/XUtils.h"

enum { MAX_THREADS = 16 };

struct DirectRows {
    int fd;
    long rows, width;
    long chunk_rows; /* rows per chunk (all rows when contiguous) */
    long n_chunks;
    off_t *addr;     /* [n_chunks] file offset of each chunk's first row */
};

/* Float32 little-endian on a little-endian host: the stored bytes are the floats. */
static bool plainFloats(hid_t dset) {
    hid_t type = H5Dget_type(dset);
    if (type < 0)
        return false;
    bool ok = H5Tequal(type, H5T_IEEE_F32LE) > 0 && H5Tequal(H5T_NATIVE_FLOAT, H5T_IEEE_F32LE) > 0;
    H5Tclose(type);
    return ok;
}

/* No user block and the sec2 driver: HDF5's addresses are offsets in the file at path. */
static bool plainFile(hid_t fid) {
    hid_t fcpl = H5Fget_create_plist(fid), fapl = H5Fget_access_plist(fid);
    hsize_t userblock = 1;
    bool ok = fcpl >= 0 && fapl >= 0 && H5Pget_userblock(fcpl, &userblock) >= 0 &&
              userblock == 0 && H5Pget_driver(fapl) == H5FD_SEC2;
    if (fcpl >= 0)
        H5Pclose(fcpl);
    if (fapl >= 0)
        H5Pclose(fapl);
    return ok;
}

static bool shape(hid_t dset, long *rows, long *width) {
    hid_t space = H5Dget_space(dset);
    hsize_t dims[2];
    bool ok = space >= 0 && H5Sget_simple_extent_ndims(space) == 2 &&
              H5Sget_simple_extent_dims(space, dims, NULL) == 2 && dims[0] > 0 && dims[1] > 0 &&
              dims[0] <= INT32_MAX && dims[1] <= INT32_MAX;
    if (space >= 0)
        H5Sclose(space);
    *rows = ok ? (long)dims[0] : 0;
    *width = ok ? (long)dims[1] : 0;
    return ok;
}

/* The chunk offsets; false when a chunk is missing, filtered, not full-size or outside
   the file. */
static bool locateChunks(DirectRows *this, hid_t dset, hid_t dcpl, off_t file_size) {
    hsize_t cdims[2];
    if (H5Pget_chunk(dcpl, 2, cdims) != 2 || (long)cdims[1] != this->width || cdims[0] < 1)
        return false;
    this->chunk_rows = (long)cdims[0];
    this->n_chunks = (this->rows + this->chunk_rows - 1) / this->chunk_rows;
    this->addr = xMallocArray((size_t)this->n_chunks, sizeof *this->addr);
    hsize_t bytes = cdims[0] * cdims[1] * sizeof(float);
    for (long k = 0; k < this->n_chunks; k++) {
        hsize_t offset[2] = {(hsize_t)(k * this->chunk_rows), 0}, size = 0;
        haddr_t a = HADDR_UNDEF;
        unsigned mask = 0;
        if (H5Dget_chunk_info_by_coord(dset, offset, &mask, &a, &size) < 0 || a == HADDR_UNDEF ||
            size != bytes || mask != 0 || a + size > (hsize_t)file_size)
            return false;
        this->addr[k] = (off_t)a;
    }
    return true;
}

static bool locateContiguous(DirectRows *this, hid_t dset, off_t file_size) {
    haddr_t a = H5Dget_offset(dset);
    hsize_t bytes = (hsize_t)this->rows * (hsize_t)this->width * sizeof(float);
    if (a == HADDR_UNDEF || H5Dget_storage_size(dset) != bytes || a + bytes > (hsize_t)file_size)
        return false;
    this->chunk_rows = this->rows;
    this->n_chunks = 1;
    this->addr = xMallocArray(1, sizeof *this->addr);
    this->addr[0] = (off_t)a;
    return true;
}

DirectRows *DirectRows_open(hid_t fid, hid_t dset, const char *path) {
    long rows, width;
    if (!plainFloats(dset) || !plainFile(fid) || !shape(dset, &rows, &width))
        return NULL;
    hid_t dcpl = H5Dget_create_plist(dset);
    if (dcpl < 0)
        return NULL;
    int fd = -1;
    struct stat sb;
    H5D_layout_t layout = H5Pget_layout(dcpl);
    bool ok = H5Pget_nfilters(dcpl) == 0 && H5Pget_external_count(dcpl) == 0 &&
              (layout == H5D_CONTIGUOUS || layout == H5D_CHUNKED);
    if (ok) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        ok = fd >= 0 && fstat(fd, &sb) == 0;
    }
    DirectRows *this = xCalloc(1, sizeof *this);
    this->fd = fd;
    this->rows = rows;
    this->width = width;
    if (ok)
        ok = layout == H5D_CHUNKED ? locateChunks(this, dset, dcpl, sb.st_size)
                                   : locateContiguous(this, dset, sb.st_size);
    H5Pclose(dcpl);
    H5Eclear2(H5E_DEFAULT); /* a failed lookup above is an answer, not an error */
    if (!ok) {
        DirectRows_close(this);
        return NULL;
    }
    return this;
}

static int readFully(int fd, char *p, size_t bytes, off_t off) {
    while (bytes > 0) {
        ssize_t got = pread(fd, p, bytes, off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -1;
        p += got;
        bytes -= (size_t)got;
        off += got;
    }
    return 0;
}

/* Rows [row0, row0 + n) into out, chunk by chunk. */
static int readPart(const DirectRows *this, long row0, long n, float *out) {
    size_t rowBytes = (size_t)this->width * sizeof(float);
    for (long r = row0; r < row0 + n;) {
        long k = r / this->chunk_rows, first = k * this->chunk_rows;
        long end = first + this->chunk_rows < row0 + n ? first + this->chunk_rows : row0 + n;
        char *dst = (char *)(out + (r - row0) * this->width);
        off_t off = this->addr[k] + (off_t)((r - first) * (long)rowBytes);
        if (readFully(this->fd, dst, (size_t)(end - r) * rowBytes, off) < 0)
            return -1;
        r = end;
    }
    return 0;
}

typedef struct Part {
    const DirectRows *reader;
    long row0, n;
    float *out;
    int rc;
} Part;

static void *partMain(void *arg) {
    Part *p = arg;
    p->rc = readPart(p->reader, p->row0, p->n, p->out);
    return NULL;
}

int DirectRows_read(const DirectRows *this, long row0, long n, float *out, int threads) {
    if (row0 < 0 || n < 0 || row0 > this->rows || n > this->rows - row0)
        return -1;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    if ((long)threads > n)
        threads = n > 0 ? (int)n : 1;
    Part parts[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    for (int t = 0; t < threads; t++) {
        long a = row0 + n * t / threads, b = row0 + n * (t + 1) / threads;
        parts[t] = (Part){.reader = this, .row0 = a, .n = b - a,
                          .out = out + (a - row0) * this->width};
        /* part 0 runs here; a thread that cannot start is read here too */
        if (t > 0)
            started[t] = pthread_create(&tid[t], NULL, partMain, &parts[t]) == 0;
    }
    partMain(&parts[0]);
    int rc = parts[0].rc;
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            partMain(&parts[t]);
        rc = rc < 0 ? rc : parts[t].rc;
    }
    return rc;
}

void DirectRows_close(DirectRows *this) {
    if (!this)
        return;
    if (this->fd >= 0)
        close(this->fd);
    free(this->addr);
    free(this);
}
