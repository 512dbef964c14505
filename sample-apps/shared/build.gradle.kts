// :shared of the Android samples' build (../android/settings.gradle.kts): the chat and
// streaming logic as an Android library. The same sources compile for the JVM console
// samples (../run), so they use no android.* API.
plugins {
    id("com.android.library")
}

// Build output goes under the samples' build (../android/build, ignored there), not into
// the shared sources.
layout.buildDirectory = rootDir.resolve("build/shared")

android {
    namespace = "dev.msocket.samples"
    compileSdk = libs.versions.android.compile.sdk.get().toInt()
    defaultConfig {
        minSdk = samples.versions.min.sdk.get().toInt()
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    sourceSets {
        // src/test holds host tests that need the native library built for this machine
        // and a running name server (ci/samples runs them); Gradle's unit tests leave them out.
        getByName("test") {
            java.setSrcDirs(emptyList<String>())
            kotlin.setSrcDirs(emptyList<String>())
        }
    }
}

kotlin {
    jvmToolchain(libs.versions.jvm.toolchain.get().toInt())
}

dependencies {
    // Its API hands out msocket's types (Endpoint, PeerFlow, PathPolicy).
    api("dev.msocket:msocket-android:0.1.0")
}
