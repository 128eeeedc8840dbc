package exporter

import (
	"context"
	"log/slog"
	"runtime"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func goVersion() string { return runtime.Version() }

// slogHandler forwards the exporter-toolkit's slog records to zap, so the
// agent writes one log format.
type slogHandler struct {
	log *zap.Logger
}

func newSlogHandler(l *zap.Logger) slog.Handler { return &slogHandler{log: l} }

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.Core().Enabled(zapLevel(l))
}

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make([]zap.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = append(fields, zap.Any(a.Key, a.Value.Any()))
		return true
	})
	if ce := h.log.Check(zapLevel(r.Level), r.Message); ce != nil {
		ce.Write(fields...)
	}
	return nil
}

func (h *slogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	fields := make([]zap.Field, len(as))
	for i, a := range as {
		fields[i] = zap.Any(a.Key, a.Value.Any())
	}
	return &slogHandler{log: h.log.With(fields...)}
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	return &slogHandler{log: h.log.With(zap.Namespace(name))}
}

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	case l >= slog.LevelInfo:
		return zapcore.InfoLevel
	}
	return zapcore.DebugLevel
}
