// The msocket Android library: the Kotlin API (src/main/kotlin), the UniFFI bindings
// generated from the Rust library, and libmsocket_ffi.so for each ABI, published as one
// AAR so an app adds a single dependency.
//
// Building needs Rust with the Android targets, cargo-ndk and the Android NDK:
//   rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
//   cargo install cargo-ndk
// `preBuild` runs the two tasks below; `./gradlew publishToMavenLocal` (or `publish`, with
// a repository configured) releases it.

import org.gradle.api.tasks.Exec

plugins {
    id("com.android.library") version "8.5.2"
    id("org.jetbrains.kotlin.android") version "2.0.21"
    `maven-publish`
}

group = "dev.msocket"
version = "0.1.0"

/** The repository root (the Cargo workspace). */
val workspace = rootDir.parentFile
val rustOut = layout.buildDirectory.dir("rustJniLibs")
val bindingsOut = layout.buildDirectory.dir("generated/uniffi")
val abis = listOf("arm64-v8a", "armeabi-v7a", "x86_64")

android {
    namespace = "dev.msocket"
    compileSdk = 34
    ndkVersion = "26.3.11579264"

    defaultConfig {
        minSdk = 23
        consumerProguardFiles("consumer-rules.pro")
        ndk { abiFilters += abis }
    }

    sourceSets["main"].apply {
        jniLibs.srcDir(rustOut)
        java.srcDir(bindingsOut)
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    publishing {
        singleVariant("release") {
            withSourcesJar()
        }
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // UniFFI's Kotlin bindings call the library through JNA (the AAR carries its .so files).
    api("net.java.dev.jna:jna:5.14.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.8.1")
}

/** libmsocket_ffi.so for every ABI, release profile, into build/rustJniLibs/<abi>/. */
val cargoNdk by tasks.registering(Exec::class) {
    workingDir = workspace
    val targets = abis.flatMap { listOf("-t", it) }
    commandLine(listOf("cargo", "ndk") + targets + listOf("-o", rustOut.get().asFile.path, "build", "--release", "--locked", "-p", "msocket-ffi", "--lib"))
    inputs.dir(File(workspace, "core/src"))
    inputs.dir(File(workspace, "ffi/src"))
    inputs.file(File(workspace, "udl/msocket.udl"))
    outputs.dir(rustOut)
}

/** The Kotlin bindings, generated from the built library (UniFFI library mode). */
val generateBindings by tasks.registering(Exec::class) {
    dependsOn(cargoNdk)
    workingDir = workspace
    val lib = rustOut.get().file("arm64-v8a/libmsocket_ffi.so").asFile.path
    commandLine(
        "cargo", "run", "--locked", "--release", "-p", "msocket-ffi-bindgen", "--",
        "generate", "--no-format", "--library", lib, "--language", "kotlin", "--out-dir", bindingsOut.get().asFile.path,
    )
    inputs.file(File(workspace, "udl/msocket.udl"))
    outputs.dir(bindingsOut)
}

tasks.named("preBuild") { dependsOn(generateBindings) }

publishing {
    publications {
        register<MavenPublication>("release") {
            groupId = "dev.msocket"
            artifactId = "msocket-android"
            version = project.version.toString()
            afterEvaluate { from(components["release"]) }
            pom {
                name.set("msocket for Android")
                description.set("One encrypted, resumable, multipath byte stream to a named peer")
                licenses {
                    license { name.set("MIT OR Apache-2.0") }
                }
            }
        }
    }
}
