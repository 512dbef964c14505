/*
 * Text on the samples' wire and in their files: one record a line, fields separated by
 * single spaces, free text percent-escaped so that it fits in one field. Line-based
 * records keep the formats readable with `cat` and easy to mirror in Swift; the escaping
 * is strict both ways, so a file or a peer that breaks it is an error, never a guess.
 */
package dev.msocket.samples

/** A record that does not parse: [message] says which and why. */
class FormatException(message: String) : Exception(message)

/** Percent-escaping of free text for one space-separated field (RFC 3986 style, UTF-8). */
object Field {
    /** [text] with `%`, `#`, spaces and control characters escaped as `%XX`; `%` alone if empty. */
    fun encode(text: String): String {
        if (text.isEmpty()) return "%"
        val out = StringBuilder(text.length + 8)
        for (ch in text) {
            val c = ch.code
            if (c <= 0x20 || c == 0x25 || c == 0x23 || c == 0x7f) {
                out.append('%').append(HEX[c shr 4]).append(HEX[c and 15])
            } else {
                out.append(ch)
            }
        }
        return out.toString()
    }

    /** The text [field] encodes; [FormatException] if it is not what [encode] writes. */
    fun decode(field: String): String {
        if (field == "%") return ""
        val bytes = java.io.ByteArrayOutputStream(field.length)
        var i = 0
        while (i < field.length) {
            if (field[i] == '%') {
                if (i + 2 >= field.length) throw FormatException("truncated escape in \"${field.take(80)}\"")
                val hi = Character.digit(field[i + 1], 16)
                val lo = Character.digit(field[i + 2], 16)
                if (hi < 0 || lo < 0) throw FormatException("bad escape in \"${field.take(80)}\"")
                bytes.write(hi * 16 + lo)
                i += 3
            } else {
                // A run of plain characters, encoded whole (a surrogate pair stays a pair).
                val end = field.indexOf('%', i).let { if (it < 0) field.length else it }
                val run = field.substring(i, end)
                if (run.any { it <= ' ' }) throw FormatException("unescaped space or control character in a field")
                bytes.write(run.toByteArray(Charsets.UTF_8))
                i = end
            }
        }
        return bytes.toByteArray().toString(Charsets.UTF_8)
    }

    private val HEX = "0123456789ABCDEF".toCharArray()
}

/** [pattern] formatted the same in every locale (a decimal point, never a comma). */
fun fmt(pattern: String, vararg args: Any?): String = String.format(java.util.Locale.ROOT, pattern, *args)
