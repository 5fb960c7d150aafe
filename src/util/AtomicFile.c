/*
moescope - util/AtomicFile.c
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "util/AtomicFile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/XUtils.h"

MsStatus AtomicFile_open(AtomicFile *this, const char *path, char **cause) {
    memset(this, 0, sizeof *this);
    if (!path || strcmp(path, "-") == 0) {
        this->fp = stdout;
        return MS_OK;
    }
    this->path = xStrdup(path);
    this->tmp_path = xAsprintf("%s.tmp.XXXXXX", path);
    int fd = mkstemp(this->tmp_path);
    if (fd < 0 || !(this->fp = fdopen(fd, "w"))) {
        setCause(cause, "%s: cannot create: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(this->tmp_path);
        }
        free(this->path);
        free(this->tmp_path);
        memset(this, 0, sizeof *this);
        return MS_ERR_IO;
    }
    fchmod(fd, 0644);
    return MS_OK;
}

MsStatus AtomicFile_commit(AtomicFile *this, char **cause) {
    if (!this->tmp_path) {
        if (fflush(this->fp) != 0) {
            setCause(cause, "standard output: write failed: %s", strerror(errno));
            return MS_ERR_IO;
        }
        return MS_OK;
    }
    int err = ferror(this->fp) ? EIO : 0;
    if (fflush(this->fp) != 0 && !err)
        err = errno;
    if (fclose(this->fp) != 0 && !err)
        err = errno;
    this->fp = NULL;
    if (!err && rename(this->tmp_path, this->path) != 0)
        err = errno;
    if (err) {
        setCause(cause, "%s: write failed: %s", this->path, strerror(err));
        unlink(this->tmp_path);
    }
    free(this->path);
    free(this->tmp_path);
    memset(this, 0, sizeof *this);
    return err ? MS_ERR_IO : MS_OK;
}

void AtomicFile_abort(AtomicFile *this) {
    if (this->tmp_path) {
        if (this->fp)
            fclose(this->fp);
        unlink(this->tmp_path);
    }
    free(this->path);
    free(this->tmp_path);
    memset(this, 0, sizeof *this);
}
